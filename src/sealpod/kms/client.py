"""The workload side of attested secret release, over httpx, in one call.

``KmsClient(url).fetch_secrets(backend, workload, names)``:
challenge → fresh ephemeral P-256 key → ``report_data = attestation_report_data(nonce,
DER(key), workload)`` → evidence from the TEE backend → attest, asking for ``names`` to be
released in the same response → open each JWE with the ephemeral key. Two round trips in all;
the token also allows later reads, ``GET /v1/secrets/{name}`` with a DPoP-style proof
(:meth:`KmsClient.fetch`).
The private key never leaves this process. :class:`AsyncKmsClient` does the same on asyncio.

The same session (token and key) also reads and moves the version counters the KMS holds for
encrypted volumes, the rollback defence that outlives a restart (docs/kms.md, "Volume
counters"); the token must release the volume's key ``volume.<name>``::

    session, secrets = client.attest_and_fetch(backend, workload, ["volume.data", ...])
    held = client.volume_counter(session, "data")          # VolumeCounter(volume_id, counter)
    client.advance_volume_counter(session, "data", volume_id=vid, expected=held.counter, new=n)

A compare-and-swap the KMS refuses (another counter, another volume under that name) raises
:class:`RollbackDetected` (exit 15) carrying what the KMS holds;
:class:`~sealpod.kms.freshness.KmsVolumeFreshness` wraps the two calls as the
:class:`~sealpod.volume.freshness.Freshness` store of one volume. Requests and answers are built
and read by :mod:`sealpod.kms.wire`, shared by both clients.

Errors map back from the server's problem JSON to the typed tree: a refusal raises
:class:`AttestationRefused` whose ``violations`` are the server's findings (code, message,
expected, actual).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from sealpod.errors import KmsUnavailable, UnknownSigningKey
from sealpod.kms.transport import sync_client
from sealpod.kms.wire import (
    DEFAULT_TIMEOUT_SECS,
    UNKNOWN_KEY_RETRY_SECS,
    AttestedSession,
    ReleasedSecret,
    VerifyArg,
    advance_body,
    attestation_body,
    checked_base_url,
    counter_path,
    open_release,
    raise_for_problem,
    read_counter,
    read_json,
    read_session,
    release_names,
    released_with,
    secret_path,
    tls_context,
    utcnow,
    workload_headers,
)
from sealpod.tee.base import TeeBackend

if TYPE_CHECKING:
    from sealpod.kms.models import VolumeCounter


class KmsClient:
    """Synchronous workload client. ``verify`` is True, False or a CA bundle path (PEM)."""

    def __init__(
        self,
        base_url: str,
        *,
        verify: VerifyArg = True,
        timeout: float = DEFAULT_TIMEOUT_SECS,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._clock = clock
        self._http = sync_client(
            base_url=checked_base_url(base_url),
            verify=tls_context(verify),
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> KmsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise KmsUnavailable(f"cannot reach the KMS: {type(exc).__name__}") from exc

    def attest(self, backend: TeeBackend, workload: bytes, *, tee: str = "sim") -> AttestedSession:
        """Challenge, evidence and attestation; returns the token bound to a fresh key.

        Raises:
            AttestationRefused: with the server's findings. KmsUnavailable, TeeError, ...
        """
        return self._attest(backend, workload, tee=tee)[0]

    def _attest(
        self, backend: TeeBackend, workload: bytes, *, tee: str, release: Sequence[str] = ()
    ) -> tuple[AttestedSession, dict[str, Any]]:
        challenge = read_json(self._send("POST", "/v1/attestation/challenge", json={"tee": tee}))
        key = ec.generate_private_key(ec.SECP256R1())
        body = attestation_body(str(challenge["nonce"]), key, workload, backend, release)
        data = read_json(self._send("POST", "/v1/attestation", json=body))
        return read_session(data, key), data

    def _workload(
        self, session: AttestedSession, method: str, path: str, body: object = None
    ) -> dict[str, Any]:
        """A request with the session's token and a fresh proof. A token signed by a key the
        answering replica has not loaded yet (a rotation a moment ago) is retried once, a
        moment later."""
        try:
            headers = workload_headers(session, path, self._clock(), method)
            return read_json(self._send(method, path, headers=headers, json=body))
        except UnknownSigningKey:
            time.sleep(UNKNOWN_KEY_RETRY_SECS)
            headers = workload_headers(session, path, self._clock(), method)
            return read_json(self._send(method, path, headers=headers, json=body))

    def fetch(self, session: AttestedSession, name: str) -> ReleasedSecret:
        """One secret, opened with the session's key.

        Raises:
            KmsAuthError: the token expired or is refused. KmsForbidden: not released to it.
            KmsNotFound, KmsUnavailable, KmsError.
        """
        data = self._workload(session, "GET", secret_path(name))
        return open_release(data, session.key, name)

    def volume_counter(self, session: AttestedSession, name: str) -> VolumeCounter:
        """What the KMS holds for volume ``name`` (``volume_id`` None and ``counter`` 0 when it
        has never seen it). The session's token must release ``volume.<name>``.

        Raises:
            ConfigError: a bad volume name. KmsAuthError, KmsForbidden, KmsUnavailable, KmsError.
        """
        return read_counter(self._workload(session, "GET", counter_path(name)), name)

    def advance_volume_counter(
        self, session: AttestedSession, name: str, *, volume_id: str, expected: int, new: int
    ) -> VolumeCounter:
        """Move volume ``name``'s counter from ``expected`` to ``new`` (compare-and-swap;
        ``expected`` 0 registers ``volume_id`` under the name).

        Raises:
            RollbackDetected: the KMS holds another counter or another volume id (its values
                are in ``counter`` and ``volume_id``).
            ConfigError: bad name, volume id or counters. KmsAuthError, KmsForbidden,
            KmsUnavailable, KmsError.
        """
        body = advance_body(volume_id, expected, new)
        return read_counter(self._workload(session, "POST", counter_path(name), body), name)

    def attest_and_fetch(
        self, backend: TeeBackend, workload: bytes, names: Sequence[str], *, tee: str = "sim"
    ) -> tuple[AttestedSession, dict[str, ReleasedSecret]]:
        """:meth:`fetch_secrets`, also returning the session (for later reads and counters).

        Raises:
            AttestationRefused: refused, or a name is not released or does not exist.
        """
        wanted = release_names(names)
        session, data = self._attest(backend, workload, tee=tee, release=wanted)
        return session, released_with(data, session.key, wanted)

    def fetch_secrets(
        self, backend: TeeBackend, workload: bytes, names: Sequence[str], *, tee: str = "sim"
    ) -> dict[str, ReleasedSecret]:
        """The whole workload side in one call: attest with every name released in the answer.

        Raises:
            AttestationRefused: refused, or a name is not released by the matched policies
            (``secret_not_released``) or does not exist (``secret_missing``).
        """
        return self.attest_and_fetch(backend, workload, names, tee=tee)[1]


class AsyncKmsClient:
    """The same on asyncio (for runtimes and the benchmark)."""

    def __init__(
        self,
        base_url: str,
        *,
        verify: VerifyArg = True,
        timeout: float = DEFAULT_TIMEOUT_SECS,
        transport: httpx.AsyncBaseTransport | None = None,
        limits: httpx.Limits | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._clock = clock
        self._http = httpx.AsyncClient(
            base_url=checked_base_url(base_url),
            verify=tls_context(verify),
            timeout=timeout,
            transport=transport,
            limits=limits or httpx.Limits(max_connections=100),
        )

    async def __aenter__(self) -> AsyncKmsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            return await self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise KmsUnavailable(f"cannot reach the KMS: {type(exc).__name__}") from exc

    async def attest(
        self, backend: TeeBackend, workload: bytes, *, tee: str = "sim"
    ) -> AttestedSession:
        return (await self._attest(backend, workload, tee=tee))[0]

    async def _attest(
        self, backend: TeeBackend, workload: bytes, *, tee: str, release: Sequence[str] = ()
    ) -> tuple[AttestedSession, dict[str, Any]]:
        challenge = read_json(
            await self._send("POST", "/v1/attestation/challenge", json={"tee": tee})
        )
        key = ec.generate_private_key(ec.SECP256R1())
        body = attestation_body(str(challenge["nonce"]), key, workload, backend, release)
        data = read_json(await self._send("POST", "/v1/attestation", json=body))
        return read_session(data, key), data

    async def _workload(
        self, session: AttestedSession, method: str, path: str, body: object = None
    ) -> dict[str, Any]:
        try:
            headers = workload_headers(session, path, self._clock(), method)
            return read_json(await self._send(method, path, headers=headers, json=body))
        except UnknownSigningKey:  # a rotation a moment ago: once more, a moment later
            await asyncio.sleep(UNKNOWN_KEY_RETRY_SECS)
            headers = workload_headers(session, path, self._clock(), method)
            return read_json(await self._send(method, path, headers=headers, json=body))

    async def fetch(self, session: AttestedSession, name: str) -> ReleasedSecret:
        data = await self._workload(session, "GET", secret_path(name))
        return open_release(data, session.key, name)

    async def volume_counter(self, session: AttestedSession, name: str) -> VolumeCounter:
        """:meth:`KmsClient.volume_counter` on asyncio."""
        return read_counter(await self._workload(session, "GET", counter_path(name)), name)

    async def advance_volume_counter(
        self, session: AttestedSession, name: str, *, volume_id: str, expected: int, new: int
    ) -> VolumeCounter:
        """:meth:`KmsClient.advance_volume_counter` on asyncio.

        Raises:
            RollbackDetected: the KMS holds another counter or another volume id.
        """
        body = advance_body(volume_id, expected, new)
        return read_counter(await self._workload(session, "POST", counter_path(name), body), name)

    async def attest_and_fetch(
        self, backend: TeeBackend, workload: bytes, names: Sequence[str], *, tee: str = "sim"
    ) -> tuple[AttestedSession, dict[str, ReleasedSecret]]:
        wanted = release_names(names)
        session, data = await self._attest(backend, workload, tee=tee, release=wanted)
        return session, released_with(data, session.key, wanted)

    async def fetch_secrets(
        self, backend: TeeBackend, workload: bytes, names: Sequence[str], *, tee: str = "sim"
    ) -> dict[str, ReleasedSecret]:
        return (await self.attest_and_fetch(backend, workload, names, tee=tee))[1]


__all__ = [
    "DEFAULT_TIMEOUT_SECS",
    "AsyncKmsClient",
    "AttestedSession",
    "KmsClient",
    "ReleasedSecret",
    "VerifyArg",
    "checked_base_url",
    "raise_for_problem",
    "tls_context",
]
