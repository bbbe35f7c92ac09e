"""What travels between a workload (or admin) client and the KMS, for both the sync and the
async client of :mod:`sealpod.kms.client`: connection settings, problem answers turned into
the typed errors, and the workload protocol's requests and answers — the attestation body, the
session it yields, the secrets released in its answer or read later, the volume counter
requests — each built and checked here, with no network I/O.
"""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

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
    UnknownSigningKey,
)
from sealpod.kms import jwe
from sealpod.kms.codec import (
    NAME_PATTERN,
    RELEASE_BUNDLE_CTY,
    VOLUME_NAME_PATTERN,
    b64decode,
    b64encode,
)
from sealpod.tee.base import TeeBackend

if TYPE_CHECKING:
    from sealpod.kms.models import Finding, VolumeCounter

# The server's pydantic models (kms.models) and the token code (joserfc) are imported where a
# function needs them, not here: `sealpod run` without volumes needs neither, and together they
# cost ~60 ms of its start (bench/run_bench.py).

DEFAULT_TIMEOUT_SECS = 30.0
#: How long a client waits before retrying a read refused with ``kms.auth.unknown_key`` (the
#: server looks its keys up again at most every 0.25 s).
UNKNOWN_KEY_RETRY_SECS = 0.3
#: TLS verification: True (system CAs), False (never outside tests), a CA file path, a context.
VerifyArg = bool | str | ssl.SSLContext
#: A session token as it travels back in the Authorization header: visible ASCII, bounded.
_TOKEN = re.compile(r"[\x21-\x7e]{1,65536}")


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
        host = url.host  # decoding an xn-- label may raise idna's IDNAError (a UnicodeError)
        # the host as the socket module will encode it: a label that is empty or longer than
        # 63 characters fails there with a UnicodeError, so fail here, before any request
        url.raw_host.decode("ascii").encode("idna")
    except (httpx.InvalidURL, TypeError, UnicodeError) as exc:
        raise ConfigError(f"KMS URL {shown!r} is malformed") from exc
    if url.scheme not in ("http", "https") or not host:
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
            findings = [finding_of(v) for v in raw]
            raise AttestationRefused(message, violations=findings)
        if code == "kms.forbidden":
            raise KmsForbidden(message)
        raise AttestationRefused(
            message, violations=[finding_of({"code": code, "message": detail})]
        )
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


def finding_of(v: object) -> Finding:
    """A server violation (problem JSON ``violations`` item) as a :class:`Finding`; a value
    that is not an object becomes a finding whose code is its text. Raises nothing."""
    from sealpod.kms.models import Finding

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


def read_json(response: httpx.Response) -> dict[str, Any]:
    """The JSON object of a successful answer.

    Raises:
        KmsError (or a subclass, see :func:`raise_for_problem`): a problem answer, or a body
            that is not a JSON object.
    """
    raise_for_problem(response)
    try:
        data = response.json()
    except ValueError as exc:
        raise KmsError(f"KMS answered {response.status_code} with a body that is not JSON") from exc
    if not isinstance(data, dict):
        raise KmsError("KMS answered with JSON that is not an object")
    return data


def attestation_body(
    nonce_b64: str,
    key: ec.EllipticCurvePrivateKey,
    workload: bytes,
    backend: TeeBackend,
    release: Sequence[str] = (),
) -> dict[str, object]:
    """The attestation request: evidence from ``backend`` binding the nonce, ``key`` and
    ``workload`` (docs/kms.md), and the names to release in the answer.

    Raises:
        MalformedEvidence: the nonce is not base64. TeeError: the backend gives no evidence.
    """
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


def read_session(data: Mapping[str, Any], key: ec.EllipticCurvePrivateKey) -> AttestedSession:
    """The session an attestation answer establishes (its token, bound to ``key``).

    Raises:
        KmsError: the answer lacks the token, secrets, policies, expiry or claims, or its
            token could not travel in a header (not visible ASCII).
    """
    token = data.get("token") if isinstance(data, Mapping) else None
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise KmsError("KMS attestation response carries no token, or one outside visible ASCII")
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


def released_with(
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


def release_names(names: Sequence[str]) -> list[str]:
    """``names`` checked (a bad one is refused before a nonce is spent), duplicates dropped."""
    for name in names:
        secret_path(name)
    return list(dict.fromkeys(names))


def open_release(
    data: Mapping[str, Any], key: ec.EllipticCurvePrivateKey, requested: str
) -> ReleasedSecret:
    """The secret of a ``GET /v1/secrets/{name}`` answer, opened with ``key``.

    Raises:
        KmsError: the answer is malformed or for another secret than ``requested``.
        CryptoError: the JWE does not open with ``key``.
    """
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


def secret_path(name: str) -> str:
    """The URL path of secret ``name``, which must be a valid secret name: it becomes a path
    segment here and a file name under ``sealpod kms fetch --out-dir``.

    Raises:
        ConfigError: ``name`` is not ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}``.
    """
    if not _SECRET_NAME.fullmatch(name):
        shown = name if len(name) <= 80 else f"{name[:80]}..."
        raise ConfigError(f"secret name {shown!r} is not [A-Za-z0-9][A-Za-z0-9._-]{{0,127}}")
    return f"/v1/secrets/{name}"


def utcnow() -> datetime:
    """The clients' default clock (proofs carry the time they are made)."""
    return datetime.now(UTC)


def workload_headers(
    session: AttestedSession, path: str, now: datetime, method: str = "GET"
) -> dict[str, str]:
    """The headers of a workload request: the session's token and a fresh proof by its key
    for ``method path``. Raises nothing."""
    from sealpod.kms.tokens import make_proof

    proof = make_proof(session.key, method=method, path=path, token=session.token, now=now)
    return {"Authorization": f"Bearer {session.token}", "DPoP": proof}


_VOLUME_NAME = re.compile(VOLUME_NAME_PATTERN)


def counter_path(name: str) -> str:
    """The URL path of volume ``name``'s counter.

    Raises:
        ConfigError: ``name`` is not ``[A-Za-z0-9][A-Za-z0-9._-]{0,120}`` (so that
            ``volume.<name>`` is a secret name).
    """
    if not _VOLUME_NAME.fullmatch(name):
        shown = name if len(name) <= 80 else f"{name[:80]}..."
        raise ConfigError(f"volume name {shown!r} is not [A-Za-z0-9][A-Za-z0-9._-]{{0,120}}")
    return f"/v1/volumes/{name}/counter"


def advance_body(volume_id: str, expected: int, new: int) -> dict[str, object]:
    """The compare-and-swap request, checked here before it is signed and sent.

    Raises:
        ConfigError: ``volume_id`` is not 32 lowercase hex digits, or ``new <= expected``.
    """
    from sealpod.kms.models import VolumeCounterAdvance

    try:
        req = VolumeCounterAdvance(volume_id=volume_id, expected=expected, new=new)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "request"
        raise ConfigError(f"volume counter {where}: {err['msg']}") from exc
    return req.model_dump()


def read_counter(data: Mapping[str, Any], name: str) -> VolumeCounter:
    """A volume counter answer, for volume ``name``.

    Raises:
        KmsError: the answer is malformed or for another volume.
    """
    from sealpod.kms.models import VolumeCounter

    try:
        counter = VolumeCounter.model_validate(data)
    except ValidationError as exc:
        raise KmsError("KMS volume counter answer is malformed") from exc
    if counter.name != name:
        raise KmsError(f"KMS answered for volume {counter.name[:130]!r}, expected {name!r}")
    return counter
