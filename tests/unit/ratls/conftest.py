"""Fixtures: a simulated platform (made once, cloned per test), RA-TLS certificates issued by
it, and a TLS server on 127.0.0.1 that records every application byte it receives."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealpod.settings import sealpod_home
from sealpod.tee.sim import SimBackend, SimIdentity, SimPlatform
from sealpod.testing.sim_fakes import clone_platform

NOW = dt.datetime.now(dt.UTC)
IDENTITY = SimIdentity(
    measurement=bytes.fromhex("11" * 32), signer=bytes.fromhex("22" * 32),
    product_id=7, svn=3, debug=False,
)  # fmt: skip
OTHER = SimIdentity(
    measurement=bytes.fromhex("33" * 32), signer=bytes.fromhex("22" * 32),
    product_id=7, svn=3, debug=False,
)  # fmt: skip


@pytest.fixture(scope="session")
def sim_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("sim-template")
    SimPlatform.init(home)
    return home


@pytest.fixture
def sim(sim_template: Path) -> SimPlatform:
    return clone_platform(sim_template, sealpod_home())


def backend(sim: SimPlatform, identity: SimIdentity = IDENTITY, emulate: str = "sgx") -> SimBackend:
    return SimBackend(sim, identity, emulate)  # type: ignore[arg-type]


class TlsServer:
    """Serves ``key_pem``/``cert_pem`` on 127.0.0.1; answers one HTTP request per connection
    and records the application bytes each connection sent."""

    def __init__(self, tmp: Path, key_pem: bytes, cert_pem: bytes) -> None:
        (tmp / "key.pem").write_bytes(key_pem)
        (tmp / "cert.pem").write_bytes(cert_pem)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self.handshakes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                conn.settimeout(2)
                tls = self.ctx.wrap_socket(conn, server_side=True)
                self.handshakes += 1
                data = b""
                try:
                    while b"\r\n\r\n" not in data:
                        chunk = tls.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                except (OSError, ssl.SSLError):
                    pass
                self.received.append(data)
                if data:
                    tls.sendall(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nattested"
                    )
                tls.close()
            except (OSError, ssl.SSLError):
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(timeout=5)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[object]:
    servers: list[TlsServer] = []

    def start(key_pem: bytes, cert_pem: bytes) -> TlsServer:
        where = tmp_path / f"srv{len(servers)}"
        where.mkdir()
        server = TlsServer(where, key_pem, cert_pem)
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.close()
