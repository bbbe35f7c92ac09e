"""Secrets on the wire: JWE (``ECDH-ES+A256KW`` / ``A256GCM``) to the workload's ephemeral key.

The KMS encrypts each released secret to the P-256 public key whose DER the workload bound into
its evidence's report_data, so only the attested workload (the holder of the private half, which
never leaves the TEE) can open it. joserfc does the JOSE work; nothing here is hand-rolled crypto.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from sealpod.errors import CryptoError, MalformedEvidence

JWE_ALG = "ECDH-ES+A256KW"
JWE_ENC = "A256GCM"
MAX_PUBLIC_KEY_DER_SIZE = 512
#: The largest ciphertext (base64url, bytes) :func:`decrypt` opens. joserfc's default (64 KiB)
#: is smaller than one answer carrying every secret of a pod (values up to 512 KiB each).
MAX_JWE_CIPHERTEXT = 16 << 20


class _Registry(jwe.JWERegistry):
    max_ciphertext_length = MAX_JWE_CIPHERTEXT


_REGISTRY = _Registry(algorithms=[JWE_ALG, JWE_ENC])


def load_ephemeral_public_key(der: bytes) -> ec.EllipticCurvePublicKey:
    """Parse an ephemeral key as DER SubjectPublicKeyInfo; it must be P-256.

    Raises:
        MalformedEvidence: not DER SPKI, or not an EC P-256 key.
    """
    if not der or len(der) > MAX_PUBLIC_KEY_DER_SIZE:
        raise MalformedEvidence(
            f"public_key is {len(der)} bytes, expected 1..{MAX_PUBLIC_KEY_DER_SIZE}",
            field="public_key",
        )
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, TypeError) as exc:
        raise MalformedEvidence(
            "public_key is not a DER SubjectPublicKeyInfo", field="public_key"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise MalformedEvidence("public_key is not an EC P-256 key", field="public_key")
    return key


def public_key_der(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    """DER SubjectPublicKeyInfo of ``key`` (the bytes bound into report_data)."""
    pub = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def encrypt_to(
    public_key: ec.EllipticCurvePublicKey, plaintext: bytes, *, kid: str, cty: str
) -> str:
    """Compact JWE of ``plaintext`` to ``public_key``; ``kid`` names the key (its thumbprint)."""
    header = {"alg": JWE_ALG, "enc": JWE_ENC, "kid": kid, "cty": cty}
    return jwe.encrypt_compact(
        header, plaintext, ECKey.import_key(public_key), algorithms=[JWE_ALG, JWE_ENC]
    )


def decrypt(token: str, private_key: ec.EllipticCurvePrivateKey) -> tuple[bytes, dict[str, object]]:
    """Open a compact JWE made by :func:`encrypt_to`; returns (plaintext, protected header).

    Raises:
        CryptoError: malformed, another algorithm, tampered, or for another key (alike).
    """
    try:
        result = jwe.decrypt_compact(token, ECKey.import_key(private_key), registry=_REGISTRY)
    except (JoseError, ValueError) as exc:
        raise CryptoError("JWE does not decrypt: malformed, tampered or for another key") from exc
    if result.plaintext is None:
        raise CryptoError("JWE has no plaintext")
    return result.plaintext, dict(result.protected)
