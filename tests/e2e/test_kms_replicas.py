"""Three KMS replicas over one PostgreSQL prove themselves, as on Kubernetes (docs/kubernetes.md).

Three real ``sealpod kms serve`` processes share one database (a fresh schema in the ``test``
database on 127.0.0.1:5432) and one TLS certificate, behind a small round-robin TCP proxy
written here (asyncio; a new backend per connection, the next one when a backend refuses,
like a load balancer with health checks). Through the proxy, workloads attest with simulated
evidence and fetch a secret (attestation and fetch usually land on different replicas) while
an admin creates secrets; meanwhile one replica is killed with SIGKILL and restarted, twice.
Then:

- every write the KMS acknowledged (a secret created, an attestation answered) is there, read
  back from each replica directly: the secret with its value, the attestation as an ``attest``
  audit record carrying the token's ``jti``;
- no nonce is accepted twice across replicas: an attestation accepted by one replica is refused
  by all three when replayed, and one attestation sent to all three at once is accepted once;
- the audit chain verifies (``sealpod kms audit --verify``, a real process, through the proxy).

Bounded: the load phase lasts ``LOAD_SECS``; the whole test has a timeout.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import ipaddress
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sealpod.build.bundle import build_bundle, load_bundle
from sealpod.build.keys import generate_key
from sealpod.errors import KmsError, SealpodError
from sealpod.kms.admin_client import AdminClient
from sealpod.kms.client import KmsClient
from sealpod.kms.wire import attestation_body
from sealpod.spec.load import image_source, load_spec
from sealpod.spec.template import write_example
from sealpod.tee.select import open_backend
from sealpod.tee.sim import SimIdentity

PG_HOST, PG_PORT, PG_DB = "127.0.0.1", 5432, "test"
PG_DSN = f"host={PG_HOST} port={PG_PORT} dbname={PG_DB} user=postgres"
REPLICAS = 3
LOAD_SECS = 14.0
SEALPOD = Path(sys.executable).with_name("sealpod")
FORKSERVER = Path(__file__).with_name("kms_forkserver.py")
SECRET = b"replicated db-password 7c1e"

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


# -- the round-robin proxy ----------------------------------------------------------------------
class RoundRobinProxy:
    """A TCP proxy on 127.0.0.1: each client connection goes to the next backend in turn
    (skipping one that refuses to connect). ``backends`` may be changed while it runs."""

    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = backends
        self.connections = [0] * len(backends)
        self._turn = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0
        self._stop: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> RoundRobinProxy:
        self._thread.start()
        assert self._ready.wait(10), "proxy did not start"
        return self

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        writers = [writer]
        try:
            for _ in range(len(self.backends)):
                index = self._turn % len(self.backends)
                self._turn += 1
                host, port = self.backends[index]
                try:
                    up_reader, up_writer = await asyncio.open_connection(host, port)
                except OSError:
                    continue  # that replica is down: the next one
                writers.append(up_writer)
                self.connections[index] += 1
                await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
                return
        finally:
            for w in writers:
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            if dst.can_write_eof():
                dst.write_eof()
        except (ConnectionError, OSError):
            dst.close()


# -- processes ----------------------------------------------------------------------------------
class ForkServer:
    """tests/e2e/kms_forkserver.py: forks pre-imported `sealpod kms serve` processes."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(FORKSERVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        assert self._line() == "ready"

    def _line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def serve(self, log: Path, *args: str) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write(" ".join(["serve", str(log), *args]) + "\n")
        self.proc.stdin.flush()
        return int(self._line())

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        self.proc.wait(timeout=10)
        self.proc.stdout.close()


@dataclass
class Replica:
    pid: int
    port: int


@dataclass
class Cluster:
    forkserver: ForkServer
    serve_args: list[str]
    work: Path
    ca: Path
    replicas: list[Replica] = field(default_factory=list)

    def start(self, index: int, port: int = 0) -> Replica:
        info = self.work / f"info-{index}-{time.monotonic_ns()}.json"
        args = [*self.serve_args, "--port", str(port), "--info-file", str(info)]
        pid = self.forkserver.serve(self.work / f"replica-{index}.log", *args)
        url = wait_ready(info, pid, self.ca)
        replica = Replica(pid, int(url.rsplit(":", 1)[1]))
        if index < len(self.replicas):
            self.replicas[index] = replica
        else:
            self.replicas.append(replica)
        return replica

    def url(self, index: int) -> str:
        return f"https://127.0.0.1:{self.replicas[index].port}"

    def stop_all(self) -> None:
        for replica in self.replicas:
            with contextlib.suppress(ProcessLookupError):
                os.kill(replica.pid, signal.SIGTERM)


def wait_ready(info: Path, pid: int, ca: Path, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if info.is_file():
            data = json.loads(info.read_text())
            if data.get("pid") == pid:
                url = str(data["url"])
                try:
                    if httpx.get(f"{url}/readyz", verify=_ctx(ca), timeout=2).status_code == 200:
                        return url
                except httpx.HTTPError:
                    pass
        time.sleep(0.02)
    raise AssertionError(f"replica {pid} did not become ready")


def _ctx(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def write_tls(directory: Path) -> tuple[Path, Path]:
    """One certificate for 127.0.0.1 shared by every replica, as a Kubernetes Secret is."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sealpod-kms")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def _pg_up() -> bool:
    import socket

    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh schema in the shared ``test`` database, dropped afterwards."""
    if not _pg_up():
        pytest.skip(f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT}")
    import psycopg

    schema = "sealpod_replicas_" + uuid.uuid4().hex[:12]
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield (
            f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{PG_DB}"
            f"?options=-csearch_path%3D{schema}"
        )
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _sp(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(SEALPOD), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"sealpod {' '.join(args)}: {result.stdout}{result.stderr}"
    return result


def _jti(token: str) -> str:
    payload = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"])


def _no_keepalive(ca: Path) -> httpx.HTTPTransport:
    # A new connection per request, so that the proxy spreads requests over the replicas.
    return httpx.HTTPTransport(verify=_ctx(ca), limits=httpx.Limits(max_keepalive_connections=0))


# -- the test -----------------------------------------------------------------------------------
@dataclass
class Ledger:
    secrets: dict[str, bytes] = field(default_factory=dict)
    sessions: list[str] = field(default_factory=list)  # jti of each answered attestation
    releases: int = 0
    failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.mark.timeout(240)
def test_three_replicas_over_one_postgresql(
    pg_url: str, _isolated_home: Path, tmp_path: Path
) -> None:
    cert, key = write_tls(tmp_path)
    _sp("sim", "init")
    init = json.loads(_sp("kms", "init", "--db", pg_url, "--json").stdout)
    assert init["ok"] is True
    token = (_isolated_home / "kms" / "admin.token").read_text().strip()

    work = tmp_path / "app"
    write_example(work)
    spec = load_spec(work / "sealpod.toml")
    built = build_bundle(
        spec,
        image=image_source(spec, work / "sealpod.toml"),
        key=generate_key(),
        out=work / "bundle",
        signed_at=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
    )
    bundle = load_bundle(built.path)
    identity = SimIdentity(
        measurement=bundle.measurement,
        signer=bundle.signer_id,
        product_id=bundle.manifest.identity.product_id,
        svn=bundle.manifest.identity.svn,
        debug=False,
    )

    serve_args = ["kms", "serve", "--db", pg_url, "--trust-sim", "--no-pcs", "--no-access-log",
                  "--tls-cert", str(cert), "--tls-key", str(key)]  # fmt: skip
    forkserver = ForkServer({**os.environ, "SEALPOD_HOME": str(_isolated_home)})
    cluster = Cluster(forkserver, serve_args, tmp_path, cert)
    proxy: RoundRobinProxy | None = None
    admin: AdminClient | None = None
    try:
        for index in range(REPLICAS):
            cluster.start(index)
        proxy = RoundRobinProxy([("127.0.0.1", r.port) for r in cluster.replicas]).start()
        front = f"https://127.0.0.1:{proxy.port}"
        admin = AdminClient(front, token=token, transport=_no_keepalive(cert))
        admin.put_secret("db-password", value=SECRET)
        admin.put_policy(
            "app",
            f'allow_simulation = true\nmeasurements = ["{bundle.measurement.hex()}"]\n'
            '[release]\nsecrets = ["db-password"]\n',
        )
        ledger = Ledger()
        stop = threading.Event()
        backend = open_backend("sim", identity=identity)

        def releases() -> None:
            with KmsClient(front, transport=_no_keepalive(cert)) as client:
                while not stop.is_set():
                    try:
                        session = client.attest(backend, bundle.measurement)
                        with ledger.lock:
                            ledger.sessions.append(_jti(session.token))
                        got = client.fetch(session, "db-password")
                        assert got.value == SECRET
                        with ledger.lock:
                            ledger.releases += 1
                    except KmsError:
                        with ledger.lock:
                            ledger.failures += 1  # a replica died mid-request: not acknowledged

        def writes() -> None:
            n = 0
            while not stop.is_set():
                name, value = f"w-{n:05d}", f"value {n} {uuid.uuid4().hex}".encode()
                n += 1
                try:
                    admin.put_secret(name, value=value)
                except SealpodError:
                    continue
                with ledger.lock:
                    ledger.secrets[name] = value

        threads = [threading.Thread(target=f) for f in (releases, releases, writes)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        try:
            for victim, at in ((1, 3.0), (2, 8.0)):
                time.sleep(max(0.0, started + at - time.monotonic()))
                os.kill(cluster.replicas[victim].pid, signal.SIGKILL)
                time.sleep(1.5)
                port = cluster.replicas[victim].port
                cluster.start(victim, port=port)  # the same address: the proxy finds it again
            time.sleep(max(0.0, started + LOAD_SECS - time.monotonic()))
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
        elapsed = time.monotonic() - started
        print(
            f"{elapsed:.1f}s: {len(ledger.sessions)} attestations, {ledger.releases} releases,"
            f" {len(ledger.secrets)} secrets written, {ledger.failures} requests lost to kills;"
            f" connections per replica {proxy.connections}"
        )
        assert len(ledger.sessions) >= 10 and len(ledger.secrets) >= 10
        assert all(count > 0 for count in proxy.connections)

        # Every acknowledged secret, read back from each replica directly.
        for index in range(REPLICAS):
            with AdminClient(cluster.url(index), token=token, verify=str(cert)) as direct:
                listed = {s["name"] for s in direct.list_secrets()}
                assert set(ledger.secrets) <= listed
                for name in list(ledger.secrets)[:: max(1, len(ledger.secrets) // 20)]:
                    assert direct.get_secret(name)[2] == ledger.secrets[name]

        # Every answered attestation is audited once; no token id twice.
        records = list(admin.audit_records())
        jtis = [r.details["jti"] for r in records if r.kind == "attest" and r.outcome == "ok"]
        assert len(jtis) == len(set(jtis))
        assert set(ledger.sessions) <= set(jtis)

        _no_nonce_twice(cluster, front, cert, backend, bundle.measurement)

        audit = _sp("kms", "audit", "--verify", "--json", "--url", front, "--ca", str(cert))
        report = json.loads(audit.stdout)
        assert report["ok"] is True and report["server"]["macs_checked"] is True
    finally:
        if admin is not None:
            admin.close()
        if proxy is not None:
            proxy.close()
        cluster.stop_all()
        forkserver.close()


def _attest_direct(url: str, ca: Path, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/v1/attestation", json=body, verify=_ctx(ca), timeout=30)


def _no_nonce_twice(cluster: Cluster, front: str, ca: Path, backend: Any, workload: bytes) -> None:
    def fresh_body() -> dict[str, Any]:
        challenge = httpx.post(
            f"{front}/v1/attestation/challenge", json={"tee": "sgx"}, verify=_ctx(ca)
        ).json()
        key = ec.generate_private_key(ec.SECP256R1())
        return attestation_body(str(challenge["nonce"]), key, workload, backend)

    # Accepted once by one replica, then replayed to all three: refused by each.
    body = fresh_body()
    assert _attest_direct(cluster.url(0), ca, body).status_code == 200
    for index in range(REPLICAS):
        replay = _attest_direct(cluster.url(index), ca, body)
        assert replay.status_code == 403, replay.text
        codes = {v["code"] for v in replay.json()["violations"]}
        assert codes == {"nonce_replayed"}, codes

    # One attestation sent to the three replicas at the same moment: accepted exactly once.
    def race(index: int, body: dict[str, Any], barrier: threading.Barrier, out: list[int]) -> None:
        barrier.wait()
        out.append(_attest_direct(cluster.url(index), ca, body).status_code)

    for _ in range(5):
        body, barrier = fresh_body(), threading.Barrier(REPLICAS)
        statuses: list[int] = []
        racers = [
            threading.Thread(target=race, args=(i, body, barrier, statuses))
            for i in range(REPLICAS)
        ]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(timeout=60)
        assert sorted(statuses) == [200, 403, 403], statuses
