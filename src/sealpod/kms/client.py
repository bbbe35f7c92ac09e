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
:class:`RollbackDetected` (exit 15) carrying what the KMS holds; :class:`KmsVolumeFreshness`
wraps the two calls as the :class:`~sealpod.volume.freshness.Freshness` store of one volume.

Errors map back from the server's problem JSON to the typed tree: a refusal raises
:class:`AttestationRefused` whose ``violations`` are the server's findings (code, message,
expected, actual).
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from sealpod.crypto.binding import attestation_report_data
from sealpod.errors import (
    AttestationRefused,
    ConfigError,
    KmsAuthError,
    KmsConflict,
    KmsError,
    KmsForbidden,
    KmsNotFound,
    KmsUnavailable,
    MalformedEvidence,
    RollbackDetected,
)
from sealpod.kms import jwe
from sealpod.kms.models import (
    NAME_PATTERN,
    RELEASE_BUNDLE_CTY,
    VOLUME_NAME_PATTERN,
    Finding,
    VolumeCounter,
    VolumeCounterAdvance,
    b64decode,
    b64encode,
)
from sealpod.kms.tokens import UNKNOWN_KEY_RETRY_SECS, UnknownSigningKey, make_proof
from sealpod.tee.base import TeeBackend

DEFAULT_TIMEOUT_SECS = 30.0
#: TLS verification: True (system CAs), False (never outside tests), a CA file path, a context.
VerifyArg = bool | str | ssl.SSLContext


def tls_context(verify: VerifyArg) -> bool | ssl.SSLContext:
    """httpx's ``verify`` for ``verify``: a CA file path becomes an SSL context trusting it.

    Raises:
        ConfigError: the CA file cannot be loaded.
    """
    if isinstance(verify, str):
        try:
            return ssl.create_default_context(cafile=verify)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load CA certificate {verify}: {exc}") from exc
    return verify


@dataclass(frozen=True, slots=True)
class ReleasedSecret:
    name: str
    version: int
    content_type: str
    value: bytes = field(repr=False)

    def __repr__(self) -> str:
        return (
            f"ReleasedSecret(name={self.name!r}, version={self.version}, "
            f"content_type={self.content_type!r}, value=<{len(self.value)} bytes>)"
        )

    def json(self) -> dict[str, Any]:
        """The value parsed as JSON (tls-cert secrets: ``{"key", "cert", "ca"}`` PEMs).

        Raises:
            ConfigError: the value is not JSON.
        """
        try:
            data = json.loads(self.value)
        except ValueError as exc:
            raise ConfigError(f"secret {self.name!r} is not JSON") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"secret {self.name!r} is not a JSON object")
        return data


@dataclass(frozen=True, slots=True)
class AttestedSession:
    """What a successful attestation yields: the token and the key it is bound to."""

    token: str = field(repr=False)
    key: ec.EllipticCurvePrivateKey = field(repr=False)
    secrets: tuple[str, ...]
    policies: tuple[str, ...]
    expires_at_unix: int
    claims: Mapping[str, object]


def checked_base_url(base_url: str) -> httpx.URL:
    """``base_url`` parsed: an absolute ``http``/``https`` URL with a host.

    Raises:
        ConfigError: the URL is malformed, relative, or of another scheme.
    """
    shown = base_url if len(base_url) <= 80 else f"{base_url[:80]}..."
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigError(f"KMS URL {shown!r} is malformed") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"KMS URL {shown!r} is not an http(s) URL with a host")
    return url


def raise_for_problem(response: httpx.Response) -> None:
    """Translate a non-2xx response (problem JSON) into the typed sealpod error.

    Raises:
        KmsAuthError, KmsForbidden, AttestationRefused, KmsNotFound, KmsConflict,
        RollbackDetected (a volume counter compare-and-swap refused), KmsUnavailable,
        ConfigError, KmsError.
    """
    if response.is_success:
        return
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = str(body.get("code", "http"))
    detail = str(body.get("detail", response.reason_phrase))
    status = response.status_code
    message = f"KMS answered {status} ({code}): {detail}"
    if status == 401:
        if code == UnknownSigningKey.code:
            raise UnknownSigningKey(message)
        raise KmsAuthError(message)
    if status == 403:
        raw = body.get("violations")
        if isinstance(raw, list):
            findings = [_finding(v) for v in raw]
            raise AttestationRefused(message, violations=findings)
        if code == "kms.forbidden":
            raise KmsForbidden(message)
        raise AttestationRefused(message, violations=[Finding(code=code, message=detail)])
    if status == 404:
        raise KmsNotFound(message)
    if status == 409:
        if code == "kms.volume_rollback":
            stored = body.get("counter")
            vid = body.get("volume_id")
            raise RollbackDetected(
                f"volume rollback refused by the KMS: {detail}",
                volume_id=vid if isinstance(vid, str) else None,
                counter=stored if isinstance(stored, int) and not isinstance(stored, bool) else 0,
            )
        raise KmsConflict(message)
    if status in (400, 413, 422):
        raise ConfigError(message)
    if status in (429, 502, 503, 504):
        raise KmsUnavailable(message)
    raise KmsError(message)


def _finding(v: object) -> Finding:
    if isinstance(v, dict):

        def opt(key: str) -> str | None:
            value = v.get(key)
            return None if value is None else str(value)

        return Finding(
            code=str(v.get("code", "unknown")),
            message=str(v.get("message", "")),
            policy=opt("policy"),
            expected=opt("expected"),
            actual=opt("actual"),
        )
    return Finding(code=str(v), message="")


def _json(response: httpx.Response) -> dict[str, Any]:
    raise_for_problem(response)
    try:
        data = response.json()
    except ValueError as exc:
        raise KmsError(f"KMS answered {response.status_code} with a body that is not JSON") from exc
    if not isinstance(data, dict):
        raise KmsError("KMS answered with JSON that is not an object")
    return data


def _attestation_body(
    nonce_b64: str,
    key: ec.EllipticCurvePrivateKey,
    workload: bytes,
    backend: TeeBackend,
    release: Sequence[str] = (),
) -> dict[str, object]:
    nonce = b64decode(nonce_b64, field="nonce")
    pub_der = jwe.public_key_der(key)
    evidence = backend.get_evidence(attestation_report_data(nonce, pub_der, workload))
    body: dict[str, object] = {
        "nonce": nonce_b64,
        "evidence": json.loads(evidence.to_envelope().to_json()),
        "public_key": b64encode(pub_der),
        "workload": workload.hex(),
    }
    if release:
        body["release"] = list(release)
    return body


def _session(data: Mapping[str, Any], key: ec.EllipticCurvePrivateKey) -> AttestedSession:
    try:
        return AttestedSession(
            token=str(data["token"]),
            key=key,
            secrets=tuple(str(s) for s in data["secrets"]),
            policies=tuple(str(p) for p in data["policies"]),
            expires_at_unix=int(data["expires_at_unix"]),
            claims=dict(data["claims"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise KmsError("KMS attestation response lacks token/secrets/policies") from exc


def _released_with(
    data: Mapping[str, Any], key: ec.EllipticCurvePrivateKey, names: Sequence[str]
) -> dict[str, ReleasedSecret]:
    """Open the secrets an attestation response carries (one JWE to ``key``): exactly
    ``names``, each once, in order.

    Raises:
        KmsError: the answer does not carry exactly the secrets asked for.
        CryptoError: the JWE does not open with ``key``.
    """
    if not names:
        return {}
    bundle = data.get("released_jwe")
    if not isinstance(bundle, str):
        raise KmsError(f"KMS attestation response does not carry the {len(names)} secrets asked")
    plaintext, header = jwe.decrypt(bundle, key)
    if header.get("cty") != RELEASE_BUNDLE_CTY:
        raise KmsError(f"KMS released secrets as {str(header.get('cty'))[:60]!r}")
    try:
        items = json.loads(plaintext)["secrets"]
        out = {
            str(item["name"]): ReleasedSecret(
                name=str(item["name"]),
                version=int(item["version"]),
                content_type=str(item["content_type"]),
                value=b64decode(str(item["value"]), field="value"),
            )
            for item in items
        }
    except (ValueError, KeyError, TypeError, MalformedEvidence) as exc:
        raise KmsError("KMS released secrets in a malformed bundle") from exc
    if list(out) != list(names) or len(items) != len(names):
        raise KmsError(f"KMS released {sorted(out)[:8]}, expected {list(names)[:8]}")
    return out


def _release_names(names: Sequence[str]) -> list[str]:
    """``names`` checked (a bad one is refused before a nonce is spent), duplicates dropped."""
    for name in names:
        _secret_path(name)
    return list(dict.fromkeys(names))


def _open_release(
    data: Mapping[str, Any], key: ec.EllipticCurvePrivateKey, requested: str
) -> ReleasedSecret:
    try:
        name, version, token = str(data["name"]), int(data["version"]), str(data["jwe"])
    except (KeyError, TypeError, ValueError) as exc:
        raise KmsError("KMS secret response lacks name/version/jwe") from exc
    if name != requested:
        raise KmsError(f"KMS answered with secret {name[:130]!r}, expected {requested!r}")
    plaintext, header = jwe.decrypt(token, key)
    return ReleasedSecret(
        name=name, version=version, content_type=str(header.get("cty", "")), value=plaintext
    )


_SECRET_NAME = re.compile(NAME_PATTERN)


def _secret_path(name: str) -> str:
    """The URL path of secret ``name``, which must be a valid secret name: it becomes a path
    segment here and a file name under ``sealpod kms fetch --out-dir``.

    Raises:
        ConfigError: ``name`` is not ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}``.
    """
    if not _SECRET_NAME.fullmatch(name):
        shown = name if len(name) <= 80 else f"{name[:80]}..."
        raise ConfigError(f"secret name {shown!r} is not [A-Za-z0-9][A-Za-z0-9._-]{{0,127}}")
    return f"/v1/secrets/{name}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _headers(
    session: AttestedSession, path: str, now: datetime, method: str = "GET"
) -> dict[str, str]:
    proof = make_proof(session.key, method=method, path=path, token=session.token, now=now)
    return {"Authorization": f"Bearer {session.token}", "DPoP": proof}


_VOLUME_NAME = re.compile(VOLUME_NAME_PATTERN)


def _counter_path(name: str) -> str:
    """The URL path of volume ``name``'s counter.

    Raises:
        ConfigError: ``name`` is not ``[A-Za-z0-9][A-Za-z0-9._-]{0,120}`` (so that
            ``volume.<name>`` is a secret name).
    """
    if not _VOLUME_NAME.fullmatch(name):
        shown = name if len(name) <= 80 else f"{name[:80]}..."
        raise ConfigError(f"volume name {shown!r} is not [A-Za-z0-9][A-Za-z0-9._-]{{0,120}}")
    return f"/v1/volumes/{name}/counter"


def _advance_body(volume_id: str, expected: int, new: int) -> dict[str, object]:
    """The compare-and-swap request, checked here before it is signed and sent.

    Raises:
        ConfigError: ``volume_id`` is not 32 lowercase hex digits, or ``new <= expected``.
    """
    try:
        req = VolumeCounterAdvance(volume_id=volume_id, expected=expected, new=new)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "request"
        raise ConfigError(f"volume counter {where}: {err['msg']}") from exc
    return req.model_dump()


def _counter(data: Mapping[str, Any], name: str) -> VolumeCounter:
    try:
        counter = VolumeCounter.model_validate(data)
    except ValidationError as exc:
        raise KmsError("KMS volume counter answer is malformed") from exc
    if counter.name != name:
        raise KmsError(f"KMS answered for volume {counter.name[:130]!r}, expected {name!r}")
    return counter


class KmsClient:
    """Synchronous workload client. ``verify`` is True, False or a CA bundle path (PEM)."""

    def __init__(
        self,
        base_url: str,
        *,
        verify: VerifyArg = True,
        timeout: float = DEFAULT_TIMEOUT_SECS,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._clock = clock
        self._http = httpx.Client(
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
        challenge = _json(self._send("POST", "/v1/attestation/challenge", json={"tee": tee}))
        key = ec.generate_private_key(ec.SECP256R1())
        body = _attestation_body(str(challenge["nonce"]), key, workload, backend, release)
        data = _json(self._send("POST", "/v1/attestation", json=body))
        return _session(data, key), data

    def _workload(
        self, session: AttestedSession, method: str, path: str, body: object = None
    ) -> dict[str, Any]:
        """A request with the session's token and a fresh proof. A token signed by a key the
        answering replica has not loaded yet (a rotation a moment ago) is retried once, a
        moment later."""
        try:
            headers = _headers(session, path, self._clock(), method)
            return _json(self._send(method, path, headers=headers, json=body))
        except UnknownSigningKey:
            time.sleep(UNKNOWN_KEY_RETRY_SECS)
            headers = _headers(session, path, self._clock(), method)
            return _json(self._send(method, path, headers=headers, json=body))

    def fetch(self, session: AttestedSession, name: str) -> ReleasedSecret:
        """One secret, opened with the session's key.

        Raises:
            KmsAuthError: the token expired or is refused. KmsForbidden: not released to it.
            KmsNotFound, KmsUnavailable, KmsError.
        """
        data = self._workload(session, "GET", _secret_path(name))
        return _open_release(data, session.key, name)

    def volume_counter(self, session: AttestedSession, name: str) -> VolumeCounter:
        """What the KMS holds for volume ``name`` (``volume_id`` None and ``counter`` 0 when it
        has never seen it). The session's token must release ``volume.<name>``.

        Raises:
            ConfigError: a bad volume name. KmsAuthError, KmsForbidden, KmsUnavailable, KmsError.
        """
        return _counter(self._workload(session, "GET", _counter_path(name)), name)

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
        body = _advance_body(volume_id, expected, new)
        return _counter(self._workload(session, "POST", _counter_path(name), body), name)

    def attest_and_fetch(
        self, backend: TeeBackend, workload: bytes, names: Sequence[str], *, tee: str = "sim"
    ) -> tuple[AttestedSession, dict[str, ReleasedSecret]]:
        """:meth:`fetch_secrets`, also returning the session (for later reads and counters).

        Raises:
            AttestationRefused: refused, or a name is not released or does not exist.
        """
        wanted = _release_names(names)
        session, data = self._attest(backend, workload, tee=tee, release=wanted)
        return session, _released_with(data, session.key, wanted)

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
        clock: Callable[[], datetime] = _utcnow,
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
        challenge = _json(await self._send("POST", "/v1/attestation/challenge", json={"tee": tee}))
        key = ec.generate_private_key(ec.SECP256R1())
        body = _attestation_body(str(challenge["nonce"]), key, workload, backend, release)
        data = _json(await self._send("POST", "/v1/attestation", json=body))
        return _session(data, key), data

    async def _workload(
        self, session: AttestedSession, method: str, path: str, body: object = None
    ) -> dict[str, Any]:
        try:
            headers = _headers(session, path, self._clock(), method)
            return _json(await self._send(method, path, headers=headers, json=body))
        except UnknownSigningKey:  # a rotation a moment ago: once more, a moment later
            await asyncio.sleep(UNKNOWN_KEY_RETRY_SECS)
            headers = _headers(session, path, self._clock(), method)
            return _json(await self._send(method, path, headers=headers, json=body))

    async def fetch(self, session: AttestedSession, name: str) -> ReleasedSecret:
        data = await self._workload(session, "GET", _secret_path(name))
        return _open_release(data, session.key, name)

    async def volume_counter(self, session: AttestedSession, name: str) -> VolumeCounter:
        """:meth:`KmsClient.volume_counter` on asyncio."""
        return _counter(await self._workload(session, "GET", _counter_path(name)), name)

    async def advance_volume_counter(
        self, session: AttestedSession, name: str, *, volume_id: str, expected: int, new: int
    ) -> VolumeCounter:
        """:meth:`KmsClient.advance_volume_counter` on asyncio.

        Raises:
            RollbackDetected: the KMS holds another counter or another volume id.
        """
        body = _advance_body(volume_id, expected, new)
        return _counter(await self._workload(session, "POST", _counter_path(name), body), name)

    async def attest_and_fetch(
        self, backend: TeeBackend, workload: bytes, names: Sequence[str], *, tee: str = "sim"
    ) -> tuple[AttestedSession, dict[str, ReleasedSecret]]:
        wanted = _release_names(names)
        session, data = await self._attest(backend, workload, tee=tee, release=wanted)
        return session, _released_with(data, session.key, wanted)

    async def fetch_secrets(
        self, backend: TeeBackend, workload: bytes, names: Sequence[str], *, tee: str = "sim"
    ) -> dict[str, ReleasedSecret]:
        return (await self.attest_and_fetch(backend, workload, names, tee=tee))[1]
