"""Issuing RA-TLS certificates: a fresh key, TEE evidence binding it, a self-signed certificate.

:func:`issue_ratls_certificate` is what ``sealpod ratls cert`` and the runtime's RA-TLS option
call. It generates an ECDSA P-384 key (Gramine's verifier accepts P-256 and P-384 keys only),
builds the claims buffer ``{"pubkey-hash": [1, SHA-256(DER SubjectPublicKeyInfo)]}`` (plus
``"nonce"`` when given), asks the backend for evidence over SHA-256(claims buffer) || 32 zero
bytes, and writes it in the 2.23.133.5.4.9 extension (:mod:`sealpod.ratls.evidence`). For SGX,
``legacy_gramine=True`` also adds Gramine's older quote extension (a second quote, over
SHA-256(SPKI)) so that Gramine releases before 1.8 can verify it; for SNP the VCEK/ASK/ARK go in
the 2.23.133.5.4.2 endorsements extension.

The private key is returned as PEM to the caller, who decides where it lives (the runtime writes it
to the workload's in-memory files); it is never logged.
"""

from __future__ import annotations

import hashlib
import ipaddress
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sealpod.errors import ConfigError, EvidenceGenerationError
from sealpod.ratls.certificate import (
    OID_GRAMINE_LEGACY_QUOTE,
    OID_TCG_DICE_ENDORSEMENTS,
    OID_TCG_DICE_EVIDENCE,
    encode_snp_endorsements,
)
from sealpod.ratls.evidence import claims_report_data, encode_claims, encode_tagged_evidence
from sealpod.tee.base import TeeBackend
from sealpod.verify.amd import pem_blocks, split_certificates
from sealpod.verify.claims import TeeKind

DEFAULT_VALIDITY = timedelta(days=7)
MAX_VALIDITY = timedelta(days=398)  # the CA/B Forum ceiling for TLS server certificates
MAX_NONCE_SIZE = 64
MAX_NAMES = 32


def _san(names: tuple[str, ...]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            if not name or len(name) > 253 or any(c.isspace() or c == "/" for c in name):
                raise ConfigError(f"subject name {name[:80]!r} is not a DNS name or IP") from None
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _snp_certificates(pem: bytes | None) -> tuple[bytes, ...]:
    if not pem:
        raise EvidenceGenerationError("SNP evidence came without its VCEK/ASK/ARK certificates")
    leaf, rest = split_certificates(pem)
    return (leaf, *pem_blocks(rest, role="evidence certificates"))


def issue_ratls_certificate(
    backend: TeeBackend,
    *,
    now: datetime,
    validity: timedelta = DEFAULT_VALIDITY,
    names: tuple[str, ...] = ("localhost", "127.0.0.1"),
    common_name: str = "sealpod RA-TLS",
    nonce: bytes | None = None,
    legacy_gramine: bool = False,
) -> tuple[bytes, bytes]:
    """A new key and its RA-TLS certificate, as ``(key_pem, cert_pem)`` (PKCS#8, unencrypted).

    Raises:
        ConfigError: a bad validity, nonce or name, or ``legacy_gramine`` for non-SGX evidence.
        TeeUnavailable, EvidenceGenerationError: the backend could not produce evidence.
    """
    if not timedelta(minutes=1) <= validity <= MAX_VALIDITY:
        raise ConfigError(f"validity is {validity}, expected 1 minute .. {MAX_VALIDITY.days} days")
    if nonce is not None and not 1 <= len(nonce) <= MAX_NONCE_SIZE:
        raise ConfigError(f"nonce is {len(nonce)} bytes, expected 1..{MAX_NONCE_SIZE}")
    if len(names) > MAX_NAMES or not common_name or len(common_name) > 64:
        raise ConfigError(f"expected 1-64 characters of common name and at most {MAX_NAMES} names")
    if now.tzinfo is None:
        raise ConfigError("now must be timezone-aware")
    key = ec.generate_private_key(ec.SECP384R1())
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = encode_claims(spki, nonce=nonce)
    evidence = backend.get_evidence(claims_report_data(claims))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))  # tolerate a client clock a little behind
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.UnrecognizedExtension(
                x509.ObjectIdentifier(OID_TCG_DICE_EVIDENCE),
                encode_tagged_evidence(evidence.tee, evidence.raw, claims),
            ),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(_san(names), critical=False)
    if evidence.tee is TeeKind.SNP:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(
                x509.ObjectIdentifier(OID_TCG_DICE_ENDORSEMENTS),
                encode_snp_endorsements(_snp_certificates(evidence.certificates)),
            ),
            critical=False,
        )
    if legacy_gramine:
        if evidence.tee is not TeeKind.SGX:
            raise ConfigError(
                f"Gramine's legacy quote extension is SGX only, not {evidence.tee.value}"
            )
        legacy = backend.get_evidence(hashlib.sha256(spki).digest())
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(OID_GRAMINE_LEGACY_QUOTE), legacy.raw),
            critical=False,
        )
    cert = builder.sign(key, hashes.SHA384())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)
