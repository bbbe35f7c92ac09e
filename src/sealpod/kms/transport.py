"""The synchronous KMS clients' httpx transport: HTTP/1.1 over one kept-alive connection of the
standard library's :mod:`http.client`.

Why not httpx's default transport (httpcore): importing httpcore imports trio whenever trio is
installed, to probe which async library runs, and the ``fuse`` extra installs trio (pyfuse3
needs it). That import alone is ~190 ms of every ``sealpod run`` start on our 2-core machine
(bench/run_bench.py prints it), for a client that talks to one origin, one request at a time.
http.client does exactly that; httpx keeps doing everything above the wire (URLs, headers,
JSON, timeouts given to the client, errors), so the clients' code does not change. The async
client keeps httpx's pooled transport: it serves concurrent requests, and runs where trio's
import cost does not matter. httpx reads proxies from the environment only for a client that is
given no transport, so when the environment names one, :func:`sync_client` gives none: the
requests go through httpx's own proxy transports, as before (and pay the import). docs/
architecture.md, "Libraries and what is hand-written", records the measurement.
"""

from __future__ import annotations

import http.client
import os
import re
import select
import socket
import ssl
import threading
from collections.abc import Mapping

import httpx

_CONNECT_ERRORS = (ConnectionRefusedError, socket.gaierror, ssl.SSLError)
#: The largest answer read: far above any KMS answer (secrets are at most a few MiB), and a
#: bound on what a server that is not the KMS can make a client hold.
MAX_RESPONSE_BYTES = 64 << 20
#: A chunk size: hex digits only (RFC 9112, 7.1). http.client reads it with ``int(line, 16)``,
#: which also takes a sign, ``0x`` and ``_``: "-1" then reads to the end of the stream, past
#: any bound, and "-2" raises a ValueError out of the file read.
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_MAX_LINE = 65536  # http.client's bound on one line
#: The variables through which httpx takes a proxy from the environment (any case).
_PROXY_VARIABLES = frozenset({"http_proxy", "https_proxy", "all_proxy"})


def sync_client(
    *,
    base_url: httpx.URL,
    verify: bool | ssl.SSLContext,
    timeout: float,
    transport: httpx.BaseTransport | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Client:
    """The httpx client of a synchronous KMS client: over ``transport`` when given, else over
    :class:`StdlibTransport`, unless the environment names a proxy (then over httpx's own
    transports, which honour it and ``NO_PROXY``)."""
    if transport is None and not _environment_names_a_proxy():
        transport = StdlibTransport(verify=verify)
    return httpx.Client(
        base_url=base_url, verify=verify, timeout=timeout, transport=transport, headers=headers
    )


def _environment_names_a_proxy() -> bool:
    return any(value and name.lower() in _PROXY_VARIABLES for name, value in os.environ.items())


class _Response(http.client.HTTPResponse):
    """http.client's response with a strict chunk size (a malformed one is http.client's own
    IncompleteRead: its caller turns our ValueError into it)."""

    def _read_next_chunk_size(self) -> int:
        line = self.fp.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise http.client.LineTooLong("chunk size")
        size = line.split(b";", 1)[0].strip(b" \t\r\n")
        if not _CHUNK_SIZE.fullmatch(size):
            raise ValueError("malformed chunk size")
        return int(size, 16)


class StdlibTransport(httpx.BaseTransport):
    """One connection to one origin, reused while the server keeps it open.

    ``verify`` is httpx's: True (the system/certifi CAs), False (no check: tests only) or an SSL
    context (a pinned certificate, a private CA).
    """

    def __init__(self, *, verify: bool | ssl.SSLContext = True) -> None:
        self._context = verify if isinstance(verify, ssl.SSLContext) else None
        if self._context is None:
            self._context = httpx.create_ssl_context(verify=verify)
        self._conn: http.client.HTTPConnection | None = None
        self._origin: tuple[str, str, int] | None = None
        self._lock = threading.Lock()  # one request at a time on the one connection

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"{url.scheme}:// is not HTTP", request=request)
        port = url.port or (443 if url.scheme == "https" else 80)
        timeout = request.extensions.get("timeout", {})
        seconds = max((v for v in timeout.values() if v is not None), default=None)
        body = request.read()
        with self._lock:
            conn = self._connection((url.scheme, url.raw_host.decode("ascii"), port), seconds)
            try:
                conn.putrequest(
                    request.method,
                    url.raw_path.decode("ascii"),
                    skip_host=True,
                    skip_accept_encoding=True,
                )
                for name, value in request.headers.raw:
                    conn.putheader(name.decode("latin-1"), value.decode("latin-1"))
                # A body of unknown length (a stream) is announced as chunked by httpx: frame
                # it so, or the server reads its bytes as chunk sizes (or as a next request).
                chunked = request.headers.get("transfer-encoding", "").lower() == "chunked"
                conn.endheaders(body if chunked else (body or None), encode_chunked=chunked)
                answer = conn.getresponse()
                if answer.status < 200:
                    # http.client skips only 100 Continue; any other 1xx would pass for the
                    # answer, leaving the real one on the connection.
                    self._drop()
                    raise httpx.RemoteProtocolError(
                        f"informational answer {answer.status}", request=request
                    )
                content = answer.read(MAX_RESPONSE_BYTES + 1)
                if len(content) > MAX_RESPONSE_BYTES:
                    self._drop()
                    raise httpx.RemoteProtocolError(
                        f"answer larger than {MAX_RESPONSE_BYTES} bytes", request=request
                    )
                if answer.length:  # http.client returns a body cut short by EOF as it is
                    self._drop()
                    raise httpx.RemoteProtocolError(
                        f"answer ended {answer.length} bytes short of its Content-Length",
                        request=request,
                    )
            except TimeoutError as exc:
                self._drop()
                raise httpx.ReadTimeout(f"no answer in {seconds} s", request=request) from exc
            except _CONNECT_ERRORS as exc:
                self._drop()
                raise httpx.ConnectError(type(exc).__name__, request=request) from exc
            except (http.client.HTTPException, OSError) as exc:
                self._drop()
                raise httpx.RemoteProtocolError(type(exc).__name__, request=request) from exc
            except ValueError as exc:
                # http.client's refusal of a header it would not send (a CR or LF in a value:
                # what h11 reported as LocalProtocolError), or of a malformed answer.
                self._drop()
                raise httpx.LocalProtocolError(type(exc).__name__, request=request) from exc
            if answer.will_close:
                self._drop()
        # http.client decodes header bytes as latin-1; hand httpx the bytes back (as str, it
        # would encode them as ASCII and fail on any other byte a server sends).
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.getheaders()]
        return httpx.Response(
            answer.status,
            headers=headers,
            stream=httpx.ByteStream(content),
            request=request,
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": answer.reason.encode("latin-1"),
            },
        )

    def _connection(
        self, origin: tuple[str, str, int], seconds: float | None
    ) -> http.client.HTTPConnection:
        conn = self._conn
        if conn is not None and (origin != self._origin or _closed_by_peer(conn)):
            self._drop()
            conn = None
        if conn is None:
            scheme, host, port = origin
            # host is the URL's ASCII form (IDNA 2008, as httpx encodes it): the str form
            # would be encoded again by the socket module as IDNA 2003, another host for
            # some names ("straße.de" -> "strasse.de").
            if scheme == "https":
                conn = http.client.HTTPSConnection(
                    host, port, timeout=seconds, context=self._context
                )
            else:
                conn = http.client.HTTPConnection(host, port, timeout=seconds)
            conn.response_class = _Response
            self._conn, self._origin = conn, origin
        elif conn.sock is not None:
            conn.sock.settimeout(seconds)
        return conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = self._origin = None

    def close(self) -> None:
        with self._lock:
            self._drop()


def _closed_by_peer(conn: http.client.HTTPConnection) -> bool:
    """An idle kept-alive socket that is readable has been closed (or spoken on) by the server:
    it must not carry the next request."""
    sock = conn.sock
    if sock is None:
        return False  # not connected yet: http.client connects on the first request
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)
