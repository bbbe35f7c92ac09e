"""Signing a bundle's measurement with the author key, and checking ``signature.json``.

What is signed: ``b"sealpod-bundle-signature/v1\\0" || measurement (32 bytes) || signed_at``
(``signed_at`` as its ASCII RFC 3339 text). The domain prefix keeps a bundle signature from
ever being valid as any other message the same author key signs (an SGX SIGSTRUCT, a TLS
handshake); the fixed-size measurement makes the concatenation unambiguous. Algorithms:

=========================== ================================================================
``ed25519``                 Ed25519 (RFC 8032), pure — the message is signed as is
``ecdsa-p384-sha384``       ECDSA over P-384 with SHA-384, DER-encoded signature
``rsa-3072-pkcs1v15-sha256`` RSASSA-PKCS1-v1_5 with SHA-256 (the scheme of SGX SIGSTRUCT)
=========================== ================================================================

No clock is read here: the caller passes ``signed_at``.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from datetime import UTC, datetime
from typing import Annotated, Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sealpod.build.keys import AuthorPrivateKey, AuthorPublicKey, KeyType, key_type, signer_id
from sealpod.errors import ConfigError, SignatureError

SIGNATURE_FORMAT: Literal["sealpod-signature/v1"] = "sealpod-signature/v1"
MAX_SIGNATURE_FILE_SIZE = 64 * 1024
MEASUREMENT_SIZE = 32
_DOMAIN = b"sealpod-bundle-signature/v1\x00"
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_TIME_RE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"
_HEX32_RE = r"^[0-9a-f]{64}$"


class Algorithm(enum.StrEnum):
    ED25519 = "ed25519"
    ECDSA_P384_SHA384 = "ecdsa-p384-sha384"
    RSA_3072_PKCS1V15_SHA256 = "rsa-3072-pkcs1v15-sha256"


ALGORITHM_FOR_KEY = {
    KeyType.ED25519: Algorithm.ED25519,
    KeyType.ECDSA_P384: Algorithm.ECDSA_P384_SHA384,
    KeyType.RSA_3072: Algorithm.RSA_3072_PKCS1V15_SHA256,
}


class SignatureDocument(BaseModel):
    """``signature.json``. ``signer_id`` and ``measurement`` are there for people and tools to
    read; verification recomputes both and refuses a document whose copies disagree."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    format: Literal["sealpod-signature/v1"]
    algorithm: Algorithm
    public_key: Annotated[str, Field(max_length=8192)]
    signer_id: Annotated[str, Field(pattern=_HEX32_RE)]
    measurement: Annotated[str, Field(pattern=_HEX32_RE)]
    signed_at: Annotated[str, Field(pattern=_TIME_RE)]
    signature: Annotated[str, Field(max_length=4096)]

    def to_json(self) -> bytes:
        """Indented, key-sorted JSON with a final newline (it is not hashed; people read it)."""
        return (json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n").encode()


def signed_message(measurement: bytes, signed_at: str) -> bytes:
    """The exact bytes the author key signs.

    Raises:
        SignatureError: a measurement that is not 32 bytes.
    """
    if len(measurement) != MEASUREMENT_SIZE:
        raise SignatureError(
            f"measurement is {len(measurement)} bytes, expected {MEASUREMENT_SIZE}"
        )
    return _DOMAIN + measurement + signed_at.encode("ascii")


def format_time(when: datetime) -> str:
    """``when`` as RFC 3339 UTC with second precision (``2025-01-31T12:00:00Z``).

    Raises:
        ConfigError: a naive datetime (no time zone).
    """
    if when.tzinfo is None:
        raise ConfigError("signing time has no time zone, expected an aware datetime")
    return when.astimezone(UTC).strftime(_TIME_FORMAT)


def sign_measurement(
    key: AuthorPrivateKey, measurement: bytes, *, signed_at: datetime
) -> SignatureDocument:
    """Sign ``measurement`` with ``key`` at the (caller-supplied) time ``signed_at``.

    Raises:
        ConfigError: an unsupported key, or a naive ``signed_at``.
        SignatureError: a measurement that is not 32 bytes.
    """
    when = format_time(signed_at)
    message = signed_message(measurement, when)
    kind = key_type(key)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(message)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(message, ec.ECDSA(hashes.SHA384()))
    else:
        signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    public = key.public_key()
    return SignatureDocument(
        format=SIGNATURE_FORMAT,
        algorithm=ALGORITHM_FOR_KEY[kind],
        public_key=_public_pem(public),
        signer_id=signer_id(public).hex(),
        measurement=measurement.hex(),
        signed_at=when,
        signature=base64.b64encode(signature).decode("ascii"),
    )


def parse_signature_document(raw: bytes) -> SignatureDocument:
    """Parse ``signature.json``.

    Raises:
        SignatureError: too large, not JSON, or not the expected shape.
    """
    if len(raw) > MAX_SIGNATURE_FILE_SIZE:
        raise SignatureError(f"signature.json is larger than {MAX_SIGNATURE_FILE_SIZE} bytes")
    try:
        return SignatureDocument.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "document"
        raise SignatureError(f"signature.json is malformed: {where}: {first['msg']}") from exc


def verify_signature(
    doc: SignatureDocument, measurement: bytes, *, signer: bytes | None = None
) -> bytes:
    """Check that ``doc`` signs ``measurement`` and, if given, that its key is ``signer``.

    Returns the signer id (SHA-256 of the author key's DER SubjectPublicKeyInfo).

    Raises:
        SignatureError: the document is for another measurement, names a key it does not hold,
            uses an algorithm that does not fit its key, the signature does not verify, or the
            signer id is not ``signer``.
    """
    if doc.measurement != measurement.hex():
        raise SignatureError(
            f"signature.json is for measurement {doc.measurement}, expected {measurement.hex()}"
            " (the manifest was changed or the signature belongs to another bundle)"
        )
    public = _load_public_key(doc.public_key)
    actual_signer = signer_id(public)
    if doc.signer_id != actual_signer.hex():
        raise SignatureError(
            f"signature.json signer_id is {doc.signer_id}, but its key's is {actual_signer.hex()}"
        )
    try:
        kind = key_type(public)
    except ConfigError as exc:
        raise SignatureError(f"signature.json key is unsupported: {exc.message}") from exc
    if ALGORITHM_FOR_KEY[kind] is not doc.algorithm:
        raise SignatureError(f"algorithm is {doc.algorithm}, expected {ALGORITHM_FOR_KEY[kind]}")
    try:
        signature = base64.b64decode(doc.signature, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError("signature.json signature is not valid base64") from exc
    if base64.b64encode(signature).decode("ascii") != doc.signature:
        raise SignatureError("signature.json signature is not in canonical base64")
    _check(public, signature, signed_message(measurement, doc.signed_at))
    if signer is not None and signer != actual_signer:
        raise SignatureError(f"signer id is {actual_signer.hex()}, expected {signer.hex()}")
    return actual_signer


def _check(public: AuthorPublicKey, signature: bytes, message: bytes) -> None:
    try:
        if isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, message)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, message, ec.ECDSA(hashes.SHA384()))
        else:
            public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature as exc:
        raise SignatureError(
            "bundle signature does not verify with the key in signature.json"
        ) from exc


def _load_public_key(pem: str) -> AuthorPublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError, UnsupportedAlgorithm) as exc:
        raise SignatureError("signature.json public_key is not a PEM public key") from exc
    if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise SignatureError(f"signature.json key is {type(key).__name__}, not an author key type")
    # One document per signature: the PEM must be exactly what sign_measurement writes.
    if _public_pem(key) != pem:
        raise SignatureError("signature.json public_key is not in canonical PEM form")
    return key


def _public_pem(key: AuthorPublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")
