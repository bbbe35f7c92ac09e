"""The sync KMS clients' transport (http.client under httpx): one kept-alive connection,
re-opened when the server closed it, and every failure an httpx error the clients map to
KmsUnavailable. A real HTTP server on 127.0.0.1 (the standard library's, HTTP/1.1)."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest

from sealpod.errors import KmsUnavailable
from sealpod.kms.client import KmsClient
from sealpod.kms.transport import StdlibTransport


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    peers: list[int] = []  # noqa: RUF012 (one server per test: reset by the fixture)

    def do_POST(self) -> None:
        body = self._body()
        self.peers.append(self.client_address[1])
        close = self.path == "/close"
        payload = b'{"echo": ' + body + b', "path": "' + self.path.encode() + b'"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        if close:
            self.close_connection = True

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding") != "chunked":
            return self.rfile.read(int(self.headers["Content-Length"]))
        body = b""
        while size := int(self.rfile.readline().split(b";")[0], 16):
            body += self.rfile.read(size)
            self.rfile.readline()
        self.rfile.readline()  # the empty trailer
        return body

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.peers = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_requests_share_one_connection_and_answers_read_as_httpx_does(server: str) -> None:
    with httpx.Client(base_url=server, transport=StdlibTransport(verify=False)) as client:
        first = client.post("/a", json={"n": 1})
        second = client.post("/b", json={"n": 2})
    assert first.json() == {"echo": {"n": 1}, "path": "/a"}
    assert second.json() == {"echo": {"n": 2}, "path": "/b"}
    assert first.http_version == "HTTP/1.1"
    assert len(set(_Handler.peers)) == 1  # the second request reused the connection


def test_a_connection_the_server_closed_is_not_reused(server: str) -> None:
    with httpx.Client(base_url=server, transport=StdlibTransport(verify=False)) as client:
        assert client.post("/close", json=1).status_code == 200
        assert client.post("/after", json=2).json()["path"] == "/after"
    assert len(set(_Handler.peers)) == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_nothing_listening_is_a_connect_error_and_the_client_says_unavailable() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    with (
        httpx.Client(base_url=url, transport=StdlibTransport(verify=False)) as client,
        pytest.raises(httpx.ConnectError),
    ):
        client.post("/v1/attestation/challenge", json={})
    with KmsClient(url, verify=False) as kms, pytest.raises(KmsUnavailable):
        kms._send("POST", "/v1/attestation/challenge", json={"tee": "sim"})


def test_a_server_that_never_answers_is_a_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepts (the kernel does), never answers
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with (
            httpx.Client(
                base_url=url, transport=StdlibTransport(verify=False), timeout=0.3
            ) as client,
            pytest.raises(httpx.ReadTimeout),
        ):
            client.post("/x", json={})


def test_tls_to_a_server_whose_certificate_is_not_trusted_is_refused(server: str) -> None:
    # Plain HTTP spoken to by TLS: the handshake fails, which must not pass as an answer.
    url = server.replace("http://", "https://")
    with (
        httpx.Client(base_url=url, transport=StdlibTransport(verify=True)) as client,
        pytest.raises(httpx.ConnectError),
    ):
        client.post("/x", json={})


def test_other_schemes_are_refused() -> None:
    with pytest.raises(httpx.UnsupportedProtocol):
        StdlibTransport(verify=False).handle_request(httpx.Request("GET", "ftp://127.0.0.1/x"))


def test_an_answer_larger_than_the_bound_is_refused(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sealpod.kms.transport as transport

    monkeypatch.setattr(transport, "MAX_RESPONSE_BYTES", 16)
    with (
        httpx.Client(base_url=server, transport=StdlibTransport(verify=False)) as client,
        pytest.raises(httpx.RemoteProtocolError, match="larger than 16 bytes"),
    ):
        client.post("/a", json={"n": "more than sixteen bytes"})


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "a\rb"])
def test_a_header_http_client_will_not_send_is_an_httpx_error(server: str, value: str) -> None:
    # http.client refuses it with a ValueError (h11 did with LocalProtocolError): it must not
    # reach the KMS clients as anything but an httpx error (they map only those).
    with (
        httpx.Client(base_url=server, transport=StdlibTransport(verify=False)) as client,
        pytest.raises(httpx.LocalProtocolError),
    ):
        client.post("/a", json={}, headers={"Authorization": f"Bearer {value}"})


def test_the_host_connected_to_is_the_urls_ascii_form(monkeypatch: pytest.MonkeyPatch) -> None:
    # httpx encodes "straße.de" as IDNA 2008 (xn--strae-oqa.de); handing the str to the socket
    # module would encode it as IDNA 2003 ("strasse.de"): another host.
    asked: list[str] = []

    def getaddrinfo(host: str, *args: object, **kwargs: object) -> list[object]:
        asked.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "not looked up")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with (
        httpx.Client(transport=StdlibTransport(verify=True)) as client,
        pytest.raises(httpx.ConnectError),
    ):
        client.get("https://straße.de/x")
    assert asked == ["xn--strae-oqa.de"]


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_a_proxy_from_the_environment_is_still_used(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    # httpx ignores the environment's proxies when a client is given a transport: the clients
    # must not hand it ours then (they went through the proxy before StdlibTransport).
    from sealpod.kms.admin_client import AdminClient

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    asked: list[bytes] = []
    with socket.socket() as proxy:
        proxy.bind(("127.0.0.1", 0))
        proxy.listen(4)

        def serve() -> None:
            for _ in range(2):
                conn, _ = proxy.accept()
                with conn:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        data += conn.recv(65536)
                    asked.append(data.split(b"\r\n", 1)[0])
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
                    )

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        monkeypatch.setenv(variable, f"http://127.0.0.1:{proxy.getsockname()[1]}")
        with KmsClient("http://kms.invalid:8443", timeout=5) as kms:
            assert kms._send("GET", "/v1/health").json() == {}
        with AdminClient("http://kms.invalid:8443", token=None, timeout=5) as admin:
            assert admin._http.get("/v1/admin/x").json() == {}
        thread.join(5)
    assert asked == [
        b"GET http://kms.invalid:8443/v1/health HTTP/1.1",
        b"GET http://kms.invalid:8443/v1/admin/x HTTP/1.1",
    ]


def test_without_a_proxy_the_clients_use_the_stdlib_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "")  # empty: no proxy, as for httpx
    with KmsClient("https://kms.example:8443") as kms:
        assert isinstance(kms._http._transport, StdlibTransport)


def test_a_streamed_body_is_sent_in_chunks_as_its_header_says(server: str) -> None:
    # httpx announces "Transfer-Encoding: chunked" for a body of unknown length; sent unframed,
    # the server read the body's bytes as chunk sizes (it hung; a body that spells chunk
    # framing would have been read as a second request).
    def body() -> Iterator[bytes]:
        yield b'{"n": '
        yield b"1}"

    with httpx.Client(
        base_url=server, transport=StdlibTransport(verify=False), timeout=3
    ) as client:
        assert client.post("/a", content=body()).json() == {"echo": {"n": 1}, "path": "/a"}
        assert client.post("/b", json=2).json() == {"echo": 2, "path": "/b"}  # still in step
