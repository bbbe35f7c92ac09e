"""RA-TLS clients: refuse a server that is not the attested workload before sending it a byte.

Python's ``ssl`` module has no certificate callback, so the check runs right after the handshake
and before any application data: the handshake runs with chain verification off (an RA-TLS
certificate is self-signed; what vouches for it is the TEE evidence inside), the peer certificate
is taken from that same connection, verified by
:func:`~sealpod.ratls.verify.verify_ratls_certificate` (evidence, key binding, policy), and
only then is the connection handed to the caller. The handshake itself proves the server holds
the certificate's private key (TLS 1.3 CertificateVerify or the TLS 1.2 ECDHE signature), which
closes the chain: evidence -> key -> this connection.

* :class:`RaTlsPeerVerifier` — the policy, trust anchors and collateral, one ``verify(der)``;
* :func:`connect` / :func:`wrap_socket` — a verified ``ssl.SSLSocket``;
* :class:`RaTlsTransport` / :class:`AsyncRaTlsTransport` — ``httpx`` transports doing the same
  on every new connection (``httpx.Client(transport=RaTlsTransport(verifier))``, or
  ``httpx.AsyncClient(transport=AsyncRaTlsTransport(verifier))``); they refuse ``http://``. The
  verdict is at ``response.extensions["network_stream"].get_extra_info("sealpod.ratls")``.

Failures are sealpod's typed errors: :class:`~sealpod.errors.PolicyViolation` (a verified
workload the policy refuses), :class:`~sealpod.errors.KeyBindingError`,
:class:`~sealpod.errors.MalformedEvidence`, :class:`~sealpod.errors.VerificationError`,
:class:`~sealpod.errors.CollateralError` or :class:`~sealpod.errors.PeerUnreachable`.
"""

from __future__ import annotations

import socket
import ssl
import typing
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import anyio
import anyio.to_thread
import httpcore
import httpx

from sealpod.collateral.models import DcapCollateralProvider, QuoteCollateral
from sealpod.errors import ConfigError, MalformedEvidence, PeerUnreachable, PolicyViolation
from sealpod.policy.model import Policy
from sealpod.ratls.verify import RaTlsVerdict, verify_ratls_certificate
from sealpod.verify.appraise import Appraiser
from sealpod.verify.trust import TrustAnchors

EXTRA_INFO_KEY = "sealpod.ratls"
DEFAULT_TIMEOUT_SECS = 10.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


class RaTlsPeerVerifier:
    """Everything needed to accept or refuse an RA-TLS peer (thread-safe; caches are shared)."""

    def __init__(
        self,
        *,
        policy: Policy,
        trust: TrustAnchors,
        dcap_collateral: DcapCollateralProvider | QuoteCollateral | None = None,
        snp_crl: bytes | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.policy = policy
        self._appraiser = Appraiser(trust)
        self._dcap = dcap_collateral
        self._snp_crl = snp_crl
        self._clock = clock

    def verify(self, certificate_der: bytes | None) -> RaTlsVerdict:
        """Verify a peer certificate; an accepted verdict or an error.

        Raises:
            MalformedEvidence: no certificate, or not an RA-TLS certificate.
            ValidityError, KeyBindingError, VerificationError, CollateralError: see
                :func:`~sealpod.ratls.verify.verify_ratls_certificate`.
            PolicyViolation: verified, but the policy refuses the claims (all violations).
        """
        if not certificate_der:
            raise MalformedEvidence("the server sent no certificate", field="certificate")
        verdict = verify_ratls_certificate(
            certificate_der,
            trust=self._appraiser,
            policy=self.policy,
            now=self._clock(),
            dcap_collateral=self._dcap,
            snp_crl=self._snp_crl,
        )
        if verdict.violations:
            raise PolicyViolation(
                "the RA-TLS server's claims violate the policy: "
                + ", ".join(v.code for v in verdict.violations),
                list(verdict.violations),
            )
        return verdict


def client_ssl_context() -> ssl.SSLContext:
    """A TLS 1.2+ client context without chain or hostname checks: RA-TLS replaces both."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the RA-TLS evidence is verified instead
    return ctx


def wrap_socket(
    sock: socket.socket,
    verifier: RaTlsPeerVerifier,
    *,
    server_hostname: str | None = None,
) -> tuple[ssl.SSLSocket, RaTlsVerdict]:
    """Handshake on ``sock`` and verify the peer; the socket is closed if it is refused.

    Raises:
        PeerUnreachable: the TLS handshake failed (network).
        SealpodError: the peer was refused (see :meth:`RaTlsPeerVerifier.verify`).
    """
    try:
        tls = client_ssl_context().wrap_socket(sock, server_hostname=server_hostname)
    except (OSError, ssl.SSLError) as exc:
        sock.close()
        raise PeerUnreachable(f"TLS handshake failed: {exc}") from exc
    try:
        verdict = verifier.verify(tls.getpeercert(binary_form=True))
    except BaseException:
        tls.close()
        raise
    return tls, verdict


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) -> (host, port).

    Raises:
        ConfigError: not HOST:PORT with a port in 1..65535.
    """
    host, sep, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"address is {address[:80]!r}, expected HOST:PORT")
    return host, int(port)


def connect(
    host: str, port: int, verifier: RaTlsPeerVerifier, *, timeout: float = DEFAULT_TIMEOUT_SECS
) -> tuple[ssl.SSLSocket, RaTlsVerdict]:
    """Connect to ``host:port`` and return the verified TLS socket and the verdict.

    Raises:
        PeerUnreachable: the server cannot be reached or the handshake failed.
        SealpodError: the peer was refused (see :meth:`RaTlsPeerVerifier.verify`).
    """
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise PeerUnreachable(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from exc
    return wrap_socket(sock, verifier, server_hostname=host)


def fetch_peer_certificate(host: str, port: int, *, timeout: float = DEFAULT_TIMEOUT_SECS) -> bytes:
    """The DER certificate ``host:port`` presents in a completed TLS handshake (the server
    proved it holds the key); the connection is closed without sending application data.

    Raises:
        PeerUnreachable: no connection or no handshake.
        MalformedEvidence: the server sent no certificate.
    """
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise PeerUnreachable(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from exc
    try:
        with client_ssl_context().wrap_socket(sock, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        raise PeerUnreachable(f"TLS handshake with {host}:{port} failed: {exc}") from exc
    finally:
        sock.close()
    if not der:
        raise MalformedEvidence("the server sent no certificate", field="certificate")
    return der


# --- httpx ------------------------------------------------------------------------------------
class _VerifiedStream(httpcore.NetworkStream):
    """A TCP stream whose ``start_tls`` verifies the RA-TLS peer before returning."""

    def __init__(self, inner: httpcore.NetworkStream, verifier: RaTlsPeerVerifier) -> None:
        self._inner = inner
        self._verifier = verifier
        self._verdict: RaTlsVerdict | None = None

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if self._verdict is None:  # never a byte of application data to an unverified peer
            raise MalformedEvidence("RA-TLS: refusing to write before the peer is verified")
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        tls = self._inner.start_tls(client_ssl_context(), server_hostname, timeout)
        ssl_object = tls.get_extra_info("ssl_object")
        # httpcore hands out the low-level _ssl object, whose getpeercert takes positional args.
        der = ssl_object.getpeercert(True) if ssl_object is not None else None
        try:
            verdict = self._verifier.verify(der)
        except BaseException:
            tls.close()
            raise
        verified = _VerifiedStream(tls, self._verifier)
        verified._verdict = verdict
        return verified

    def get_extra_info(self, info: str) -> typing.Any:
        if info == EXTRA_INFO_KEY:
            return self._verdict
        return self._inner.get_extra_info(info)


class _RaTlsBackend(httpcore.NetworkBackend):
    def __init__(self, verifier: RaTlsPeerVerifier) -> None:
        self._inner = httpcore.SyncBackend()
        self._verifier = verifier

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _VerifiedStream(stream, self._verifier)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:  # pragma: no cover - refused
        raise ConfigError("RA-TLS connects over TCP only")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class RaTlsTransport(httpx.HTTPTransport):
    """An httpx transport that verifies the RA-TLS certificate of every new connection.

    Only ``https://`` is accepted; proxies are not supported (the evidence must come from the
    server the client talks to).
    """

    def __init__(self, verifier: RaTlsPeerVerifier, *, retries: int = 0) -> None:
        super().__init__(verify=client_ssl_context(), retries=retries, trust_env=False)
        # httpx's HTTPTransport maps requests onto this pool; ours connects through the
        # verifying network backend.
        self._pool = httpcore.ConnectionPool(
            ssl_context=client_ssl_context(),
            retries=retries,
            network_backend=_RaTlsBackend(verifier),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` over a verified connection.

        Raises:
            ConfigError: a URL other than ``https://``.
            SealpodError: the server was refused (nothing was sent to it).
        """
        if request.url.scheme != "https":
            raise ConfigError(f"RA-TLS needs an https:// URL, got {request.url.scheme}://")
        return super().handle_request(request)


# --- httpx, async ---------------------------------------------------------------------------------
class _AsyncVerifiedStream(httpcore.AsyncNetworkStream):
    """The async twin of :class:`_VerifiedStream` (verification runs in a worker thread)."""

    def __init__(self, inner: httpcore.AsyncNetworkStream, verifier: RaTlsPeerVerifier) -> None:
        self._inner = inner
        self._verifier = verifier
        self._verdict: RaTlsVerdict | None = None

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if self._verdict is None:
            raise MalformedEvidence("RA-TLS: refusing to write before the peer is verified")
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        tls = await self._inner.start_tls(client_ssl_context(), server_hostname, timeout)
        ssl_object = tls.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(True) if ssl_object is not None else None
        try:
            verdict = await anyio.to_thread.run_sync(self._verifier.verify, der)
        except BaseException:
            await tls.aclose()
            raise
        verified = _AsyncVerifiedStream(tls, self._verifier)
        verified._verdict = verdict
        return verified

    def get_extra_info(self, info: str) -> typing.Any:
        if info == EXTRA_INFO_KEY:
            return self._verdict
        return self._inner.get_extra_info(info)


class _AsyncRaTlsBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, verifier: RaTlsPeerVerifier) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._verifier = verifier

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _AsyncVerifiedStream(stream, self._verifier)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:  # pragma: no cover - refused
        raise ConfigError("RA-TLS connects over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class AsyncRaTlsTransport(httpx.AsyncHTTPTransport):
    """The async form of :class:`RaTlsTransport` (asyncio or trio through anyio)."""

    def __init__(self, verifier: RaTlsPeerVerifier, *, retries: int = 0) -> None:
        super().__init__(verify=client_ssl_context(), retries=retries, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=client_ssl_context(),
            retries=retries,
            network_backend=_AsyncRaTlsBackend(verifier),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` over a verified connection.

        Raises:
            ConfigError: a URL other than ``https://``.
            SealpodError: the server was refused (nothing was sent to it).
        """
        if request.url.scheme != "https":
            raise ConfigError(f"RA-TLS needs an https:// URL, got {request.url.scheme}://")
        return await super().handle_async_request(request)
