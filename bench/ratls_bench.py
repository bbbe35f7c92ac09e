"""What RA-TLS costs a client per new connection, beside a plain TLS connection, same run.

A local TLS server on 127.0.0.1 serves a simulated SGX RA-TLS certificate (P-384 key, DCAP v3
quote in the 2.23.133.5.4.9 extension). N new connections each (default 100):

- ``plain TLS``: handshake without verification (the reference: what TLS alone costs);
- ``RA-TLS``: handshake + parse + key binding + quote verification + policy
  (``sealpod.ratls.client.connect``), verifier caches warm (a long-running client);
- ``RA-TLS cold``: the same with every DCAP verification cache cleared before each connection.

Also the time to issue one certificate (key generation, quote, certificate) with the simulator.
The simulated platform signs fresh collateral for every lookup, so "warm" still verifies
collateral each time; with a fixed collateral set (hardware) warm connections are cheaper.

    .venv/bin/python bench/ratls_bench.py [--n 100]
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import median, percentile, table

from sealpod.policy.model import Policy
from sealpod.ratls.client import RaTlsPeerVerifier, client_ssl_context, connect
from sealpod.ratls.issue import issue_ratls_certificate
from sealpod.tee.sim import SimBackend, SimIdentity, SimPlatform
from sealpod.verify.dcap import clear_caches

IDENTITY = SimIdentity(measurement=b"\x11" * 32, signer=b"\x22" * 32, product_id=1, svn=1,
                       debug=False)  # fmt: skip


def serve(cert: Path, key: Path) -> int:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)

    def loop() -> None:
        while True:
            conn, _ = sock.accept()
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                conn.close()

    threading.Thread(target=loop, daemon=True).start()
    return int(sock.getsockname()[1])


def timed(n: int, fn) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="ratls-bench-"))
    os.environ["SEALPOD_HOME"] = str(home)
    platform = SimPlatform.init(home)
    now = datetime.now(UTC)
    backend = SimBackend(platform, IDENTITY, "sgx")
    issue = timed(5, lambda: issue_ratls_certificate(backend, now=now))
    key_pem, cert_pem = issue_ratls_certificate(backend, now=now)
    (home / "key.pem").write_bytes(key_pem)
    (home / "cert.pem").write_bytes(cert_pem)
    port = serve(home / "cert.pem", home / "key.pem")
    verifier = RaTlsPeerVerifier(
        policy=Policy(allow_simulation=True, measurements=[IDENTITY.measurement.hex()]),
        trust=platform.trust_anchors(), dcap_collateral=platform.dcap_collateral(now=now),
        clock=lambda: now,
    )  # fmt: skip

    def plain() -> None:
        with socket.create_connection(("127.0.0.1", port)) as raw:
            with client_ssl_context().wrap_socket(raw, server_hostname="127.0.0.1"):
                pass

    def ratls() -> None:
        sock, _ = connect("127.0.0.1", port, verifier)
        sock.close()

    def ratls_cold() -> None:
        clear_caches()
        ratls()

    ratls()  # warm the caches once
    rows = []
    for name, fn in (("plain TLS (reference)", plain), ("RA-TLS, warm", ratls),
                     ("RA-TLS, cold caches", ratls_cold)):  # fmt: skip
        samples = timed(args.n, fn)
        rows.append((name, args.n, median(samples), percentile(samples, 95)))
    rows.append(("issue certificate (sim)", len(issue), median(issue), percentile(issue, 95)))
    table("RA-TLS per new connection, ms", ("what", "n", "median ms", "p95 ms"), rows)


if __name__ == "__main__":
    main()
