"""`sealpod kms serve --workers N`: pre-forked workers on one socket, as an operator runs it.

Several workers serve releases (each attestation consumes its nonce in the shared store, so a
challenge issued by one worker is accepted by another); a killed worker is replaced; SIGTERM
stops every worker; several workers without the master key at start are refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

import pytest
from test_kms_e2e import Logs, sp, start_server, stop_server

from sealpod.kms.admin_client import AdminClient
from sealpod.kms.client import KmsClient
from sealpod.tee.sim import SimBackend, SimIdentity, SimPlatform

IDENTITY = SimIdentity(
    measurement=hashlib.sha256(b"workers test").digest(),
    signer=hashlib.sha256(b"workers author").digest(),
    product_id=1,
    svn=1,
)
VALUE = b"workers-test secret 6d1f"


def children(pid: int) -> set[int]:
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.add(int(stat.parent.name))
    return out


def wait_for(predicate: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def scrape(url: str, ca: str | None) -> dict[tuple[str, str], float]:
    """One scrape on a fresh connection: {(sample name, outcome label): value}."""
    import ssl

    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    verify = ssl.create_default_context(cafile=ca) if ca else True
    with httpx.Client(verify=verify) as client:
        text = client.get(f"{url}/metrics").text
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, sample.labels.get("outcome", ""))
            out[key] = out.get(key, 0.0) + sample.value
    return out


def release_many(url: str, ca: str | None, backend: SimBackend, n: int) -> None:
    # A fresh connection per release, so the kernel spreads them over the workers.
    for _ in range(n):
        with KmsClient(url, verify=ca or True) as client:
            got = client.fetch_secrets(backend, IDENTITY.measurement, ["db"])
        assert got["db"].value == VALUE


@pytest.mark.slow
def test_workers_serve_restart_and_stop(_isolated_home: Path, tmp_path: Path) -> None:
    logs = Logs()
    sp("kms", "init")
    log = tmp_path / "serve.log"
    logs.files.append(log)
    srv = start_server(_isolated_home, log, "--trust-sim", "--no-pcs", "--workers", "2")
    try:
        info = json.loads((_isolated_home / "kms" / "server.json").read_text())
        assert info["workers"] == 2 and info["pid"] == srv.proc.pid
        wait_for(lambda: len(children(srv.proc.pid)) == 2, "two workers")
        token = (_isolated_home / "kms" / "admin.token").read_text().strip()
        with AdminClient(srv.url, token=token, verify=srv.ca or True) as admin:
            admin.put_secret("db", value=VALUE)
            admin.put_policy(
                "w",
                f'allow_simulation = true\nmeasurements = ["{IDENTITY.measurement.hex()}"]\n'
                '[release]\nsecrets = ["db"]\n',
            )
        backend = SimBackend(SimPlatform.load(_isolated_home), IDENTITY, "sgx")
        release_many(srv.url, srv.ca, backend, 6)

        before = children(srv.proc.pid)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        wait_for(
            lambda: len(children(srv.proc.pid)) == 2 and victim not in children(srv.proc.pid),
            "a replacement worker",
        )
        release_many(srv.url, srv.ca, backend, 4)
        assert "event=worker_exit" in log.read_text()
        with AdminClient(srv.url, token=token, verify=srv.ca or True) as admin:
            report, server_view = admin.audit_verify()  # all workers extended one chain
            released = [r for r in admin.audit_records() if r.kind == "secret.release"]
        assert report.ok and server_view["ok"], (report, server_view)
        assert len(released) == 10
        # Whichever worker a scrape reaches, /metrics counts the work of all (the killed one's
        # too): the supervisor put prometheus_client in multiprocess mode before forking.
        for _ in range(4):
            scraped = scrape(srv.url, srv.ca)
            assert scraped[("sealpod_kms_attestations_total", "accepted")] == 10, scraped
            assert scraped[("sealpod_kms_sealed", "")] == 0

        workers = children(srv.proc.pid)
    finally:
        stop_server(srv)
    assert not (_isolated_home / "kms" / "server.json").exists()
    for pid in workers:  # reaped by the supervisor before it exited
        assert not Path(f"/proc/{pid}").exists()
    assert VALUE.decode() not in logs.text() and token not in logs.text()


def test_ctrl_c_stops_every_worker(_isolated_home: Path, tmp_path: Path) -> None:
    sp("kms", "init")
    srv = start_server(_isolated_home, tmp_path / "serve.log", "--insecure-http", "--workers", "2")
    wait_for(lambda: len(children(srv.proc.pid)) == 2, "two workers")
    workers = children(srv.proc.pid)
    srv.proc.send_signal(signal.SIGINT)
    assert srv.proc.wait(timeout=30) == 0, (tmp_path / "serve.log").read_text()
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


def test_several_workers_need_the_key_at_start(_isolated_home: Path, tmp_path: Path) -> None:
    shares = tmp_path / "shares"
    sp("kms", "init", "--shares", "3", "--threshold", "2", "--shares-dir", str(shares))
    proc = sp("kms", "serve", "--port", "0", "--workers", "2", ok=False)
    assert proc.returncode == 2, proc.stderr
    assert "--workers > 1 needs the master key at start" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_forwarded_for_from_loopback_does_not_dodge_the_rate_limit(
    _isolated_home: Path, tmp_path: Path
) -> None:
    """Without trust_forwarded_for the client is the TCP peer, whatever X-Forwarded-For says
    (uvicorn's own proxy handling would believe any loopback peer)."""
    import httpx

    sp("kms", "init")
    srv = start_server(
        _isolated_home, tmp_path / "serve.log", "--insecure-http", "--rate", "0.01", "--burst", "2"
    )
    try:
        codes = [
            httpx.post(
                f"{srv.url}/v1/attestation/challenge",
                json={"tee": "sgx"},
                headers={"X-Forwarded-For": f"203.0.113.{i}"},
            ).status_code
            for i in range(4)
        ]
    finally:
        stop_server(srv)
    assert codes == [200, 200, 429, 429]


def test_workers_enforce_one_rate_limit_together(_isolated_home: Path, tmp_path: Path) -> None:
    """Two workers, burst 3: a client on fresh connections (spread over both workers) gets 3
    challenges, not 3 per worker."""
    import httpx

    sp("kms", "init")
    srv = start_server(
        _isolated_home, tmp_path / "serve.log", "--insecure-http", "--workers", "2",
        "--rate", "0.01", "--burst", "3",
    )  # fmt: skip
    try:
        wait_for(lambda: len(children(srv.proc.pid)) == 2, "two workers")
        codes = []
        for _ in range(10):
            with httpx.Client() as client:  # a new connection each time
                codes.append(
                    client.post(
                        f"{srv.url}/v1/attestation/challenge", json={"tee": "sgx"}
                    ).status_code
                )
        scraped = scrape(srv.url, None)
    finally:
        stop_server(srv)
    assert codes == [200] * 3 + [429] * 7, codes
    assert scraped[("sealpod_kms_rate_limited_total", "")] == 7
