"""The application tax of catalog entries in sim mode, beside the same server started natively,
in one run.

Rows:

* ``redis-benchmark -t set,get -n N -c 50`` (``--rounds`` alternating runs, median) against
  the catalog's redis under `sealpod run --tee sim --network host` (persistence off, then AOF
  ``appendfsync everysec`` on the encrypted volume), and against the host's ``redis-server``
  (same Debian version) with the same config on a plain directory. Goals: >= 95% of native
  with persistence off, >= 85% with AOF.
* ``pgbench`` (TPC-B-like, scale 10, 8 clients, TLS) against the catalog's PostgreSQL with its
  data on the encrypted volume, and against the host's PostgreSQL 15 binaries with the same
  config and TLS (a self-signed certificate) on a plain directory. Goal: >= 70% of native TPS.
  With ``--pgbench-window-ms N``, a second pod row: the same entry built with
  ``rollback_window_ms=N`` (commits return before the KMS records them; docs/runtime.md).
* start to ready: from spawning `sealpod run` (or the native server) to its port answering,
  medians of ``--rounds`` restarts (the first, initialising start is not counted).

Everything binds 127.0.0.1 on the catalog's ports (16379/16380, 15432) or the native ones
(16501, 15501). Needs root, mmdebstrap, bubblewrap and FUSE (as the e2e tests); the rootfs
cache is ``.venv/catalog-cache``. The benchmark password is a throwaway KMS secret and is
passed to redis-benchmark with ``-a`` (bench only).

Usage::

    .venv/bin/python bench/catalog_bench.py [--rounds 3] [--requests 100000] [--pgbench-seconds 20]
        [--pgbench-window-ms 100]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "tests" / "e2e"))

from _report import median, table  # noqa: E402
from catalog_harness import Entry, build_and_provision, start  # noqa: E402
from pod_harness import Kms, start_kms  # noqa: E402

from sealpod.catalog.recipes import get_recipe  # noqa: E402

NATIVE_REDIS_PORT = 16501
NATIVE_PG_PORT = 15501
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def wait_port(port: int, timeout: float = 120) -> float:
    """Seconds until 127.0.0.1:port accepts."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return time.monotonic() - started
        time.sleep(0.01)
    raise SystemExit(f"port {port} did not open in {timeout} s")


def redis_bench(port: int, password: str, requests: int) -> dict[str, float]:
    """requests/s per test from redis-benchmark's CSV output."""
    out = subprocess.run(
        ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-a", password,
         "-t", "set,get", "-n", str(requests), "-c", "50", "--csv"],
        capture_output=True, text=True, timeout=600, check=True,
    ).stdout  # fmt: skip
    result = {}
    for line in out.splitlines():
        cells = [c.strip('"') for c in line.split(",")]
        if cells and cells[0] in ("SET", "GET"):
            result[cells[0]] = float(cells[1])
    return result


def native_redis(
    entry: Entry, work: Path, appendonly: bool, password: str
) -> subprocess.Popen[bytes]:
    """The host's redis-server with the entry's config on plain directories (TLS lines off)."""
    conf_src = (entry.build.out / "rootfs" / "etc/redis/sealpod.conf").read_text()
    data = work / f"native-redis-{'aof' if appendonly else 'off'}"
    data.mkdir()
    include = work / "native-redis-secrets.conf"
    include.write_text(f'requirepass "{password}"\n')
    include.chmod(0o600)
    conf = re.sub(r"(?m)^tls-.*\n", "", conf_src)
    conf = re.sub(r"(?m)^port .*$", f"port {NATIVE_REDIS_PORT}", conf)
    conf = re.sub(r"(?m)^dir .*$", f"dir {data}", conf)
    conf = re.sub(r"(?m)^appendonly .*$", f"appendonly {'yes' if appendonly else 'no'}", conf)
    conf = conf.replace("/run/redis/secrets.conf", str(include))
    path = work / f"native-redis-{appendonly}.conf"
    path.write_text(conf)
    return subprocess.Popen(["redis-server", str(path)], stdout=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def bench_redis(tmp: Path, kms: Kms, requests: int, rounds: int, rows: list[list[object]]) -> None:
    """Both servers up at once; their runs alternate ``rounds`` times (median shown), so that
    drift in the machine's speed hits both alike (single runs differed by 15% here)."""
    for appendonly in (False, True):
        label = "AOF everysec, encrypted volume" if appendonly else "persistence off"
        name = "redisaof" if appendonly else "redisoff"
        entry = build_and_provision(
            tmp / name, kms, "redis",
            [f"name={name}", f"appendonly={'yes' if appendonly else 'no'}"],
        )  # fmt: skip
        password = entry.secret(f"{name}-password")
        native = native_redis(entry, tmp, appendonly, password)
        pod = None
        runs: dict[str, list[dict[str, float]]] = {"native": [], "pod": []}
        try:
            wait_port(NATIVE_REDIS_PORT)
            pod = start(entry)
            for _ in range(rounds):
                runs["native"].append(redis_bench(NATIVE_REDIS_PORT, password, requests))
                runs["pod"].append(redis_bench(16379, password, requests))
        finally:
            stop(native)
            if pod is not None:
                pod.stop()
        for test in ("SET", "GET"):
            ref = median([r[test] for r in runs["native"]])
            got = median([r[test] for r in runs["pod"]])
            rows.append([f"redis {test}, {label}", ref, got, 100 * got / ref])


def pgbench(port: int, password: str, seconds: int, host_ssl: str) -> float:
    env = {**os.environ, "PGPASSWORD": password, "PGSSLMODE": host_ssl}
    base = ["-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "postgres"]
    for _ in range(120):  # the port answers while the server still says "starting up"
        init = subprocess.run([str(PG_BIN / "pgbench"), "-i", "-q", "-s", "10", *base], env=env,
                              capture_output=True, text=True, timeout=900)  # fmt: skip
        if init.returncode == 0:
            break
        if "starting up" not in init.stderr:
            raise SystemExit(f"pgbench -i failed:\n{init.stderr}")
        time.sleep(0.5)
    out = subprocess.run(
        [str(PG_BIN / "pgbench"), "-c", "8", "-j", "2", "-T", str(seconds), *base],
        env=env, capture_output=True, text=True, check=True, timeout=seconds + 300,
    ).stdout  # fmt: skip
    match = re.search(r"tps = ([0-9.]+)", out)
    if match is None:
        raise SystemExit(f"pgbench printed no tps:\n{out}")
    return float(match.group(1))


def self_signed(work: Path) -> tuple[Path, Path]:
    """A P-256 key and self-signed certificate for 127.0.0.1 (the native server's TLS)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    key_path, cert_path = work / "native-tls.key", work / "native-tls.crt"
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key_path.write_bytes(pem)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.chmod(0o600)
    return key_path, cert_path


def native_postgres(entry: Entry, work: Path, password: str) -> subprocess.Popen[bytes]:
    """Host PostgreSQL 15 with the entry's config and TLS (a self-signed certificate)."""
    data = work / "native-pg"
    data.mkdir(mode=0o700)
    sock = work / "native-pg-sock"
    sock.mkdir()
    pwfile = work / "native-pg-pw"
    pwfile.write_text(password)
    key, cert = self_signed(work)
    for p in (data, sock, pwfile, key, cert):
        shutil.chown(p, "postgres", "postgres")
    subprocess.run(
        ["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data), "-U",
         "postgres", f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8", "--locale=C"],
        capture_output=True, check=True, timeout=300,
    )  # fmt: skip
    conf = (entry.build.out / "rootfs" / "etc/postgresql/sealpod.conf").read_text()
    conf = re.sub(r"(?m)^(data_directory|hba_file) = .*\n", "", conf)
    conf = conf.replace("/run/secrets/tls.crt", str(cert)).replace("/run/secrets/tls.key", str(key))
    conf = re.sub(r"(?m)^port = .*$", f"port = {NATIVE_PG_PORT}", conf)
    conf = conf.replace("/run/postgresql", str(sock))
    (data / "postgresql.conf").write_text(conf)
    (data / "pg_hba.conf").write_text("hostssl all all 127.0.0.1/32 scram-sha-256\n")
    return subprocess.Popen(
        ["runuser", "-u", "postgres", "--", str(PG_BIN / "postgres"), "-D", str(data)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def bench_postgres(
    tmp: Path,
    kms: Kms,
    seconds: int,
    rows: list[list[object]],
    window_ms: int = 0,
    params: tuple[str, ...] = (),
) -> Entry:
    entry = build_and_provision(tmp / "pg", kms, "postgresql", list(params))
    password = entry.secret("postgresql-password")
    native = native_postgres(entry, tmp, password)
    try:
        wait_port(NATIVE_PG_PORT)
        time.sleep(1)
        ref = pgbench(NATIVE_PG_PORT, password, seconds, "require")
    finally:
        stop(native)
    pod = start(entry)
    try:
        got = pgbench(15432, password, seconds, "require")
    finally:
        pod.stop()
    rows.append(["pgbench TPS, TLS, data on the encrypted volume", ref, got, 100 * got / ref])
    if window_ms:
        # Another build: the window is part of the signed spec. Its own instance name, so that
        # it gets its own volume and secrets.
        windowed = build_and_provision(
            tmp / "pg-window", kms, "postgresql",
            [*params, f"rollback_window_ms={window_ms}", "name=pgwindow"],
        )  # fmt: skip
        pod = start(windowed)
        try:
            got = pgbench(15432, windowed.secret("pgwindow-password"), seconds, "require")
        finally:
            pod.stop()
        rows.append([f"  the same, rollback window {window_ms} ms", ref, got, 100 * got / ref])
    return entry


def bench_start(tmp: Path, kms: Kms, rounds: int, names: list[str]) -> None:
    rows: list[list[object]] = []
    for name in names:
        entry = build_and_provision(tmp / f"start-{name}", kms, name)
        start(entry).stop()  # first start: initialisation, not counted
        samples = []
        for _ in range(rounds):
            pod = start(entry)
            assert pod.ready_after is not None
            samples.append(pod.ready_after)
            pod.stop()
        rows.append([name, median(samples), min(samples), max(samples)])
    table(f"sealpod run to ready, {rounds} rounds (s)", ["entry", "median", "min", "max"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--pgbench-seconds", type=int, default=20)
    parser.add_argument("--pgbench-window-ms", type=int, default=0,
                        help="also run the pod with this rollback window (0: not)")  # fmt: skip
    parser.add_argument("--pgbench-param", action="append", default=[], metavar="NAME=VALUE",
                        help="a postgresql recipe parameter for every pgbench build, native "
                        "and pod alike (e.g. commit_delay=500)")  # fmt: skip
    parser.add_argument("--only", choices=["redis", "pgbench", "start"], action="append")
    parser.add_argument("--entries", default=",".join(["redis", "postgresql", "mariadb", "nginx",
                                                       "mosquitto", "python"]))  # fmt: skip
    args = parser.parse_args()
    only = set(args.only or ["redis", "pgbench", "start"])
    for name in args.entries.split(","):
        get_recipe(name)
    with tempfile.TemporaryDirectory(prefix="sealpod-catalog-bench-") as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o755)  # the native PostgreSQL runs as the host's postgres user
        os.environ["SEALPOD_HOME"] = str(tmp / "home")
        (tmp / "home").mkdir()
        kms = start_kms(tmp / "home")
        try:
            rows: list[list[object]] = []
            if "redis" in only:
                bench_redis(tmp, kms, args.requests, args.rounds, rows)
            if rows:
                table("application tax, sim mode, same run", ["what", "native", "sealpod",
                      "% of native"], rows)  # fmt: skip
                rows = []
            if "pgbench" in only:
                bench_postgres(
                    tmp, kms, args.pgbench_seconds, rows, args.pgbench_window_ms,
                    tuple(args.pgbench_param),
                )  # fmt: skip
            if rows:
                table("application tax, sim mode, same run", ["what", "native", "sealpod",
                      "% of native"], rows)  # fmt: skip
            if "start" in only:
                bench_start(tmp, kms, args.rounds, args.entries.split(","))
        finally:
            kms.stop()


if __name__ == "__main__":
    main()
