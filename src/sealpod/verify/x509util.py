"""X.509 helpers for attestation chains: pinned roots, validity at ``now``, CRLs, and caches.

Attestation PKIs are small and fixed (root -> CA -> leaf), so the checks are spelled out here
instead of going through a general path builder: each certificate must be signed by the next
one in the given order, every issuer must be a CA (basicConstraints), the last certificate must
be self-signed and its SHA-256 fingerprint pinned in the trust anchors, and every certificate
must be valid at ``now`` (notBefore <= now <= notAfter, RFC 5280 4.1.2.5).

Everything that is a pure function of bytes (parsing a certificate or CRL, "this signature over
these bytes verifies with that key") is cached by content, so verifying many quotes from the same
platforms checks each chain and each collateral signature once. The caches hold facts about
bytes only; time windows and revocation are evaluated on every call.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
)

from sealpod.crypto import pem
from sealpod.errors import (
    CertificateError,
    RevokedError,
    UntrustedRoot,
    ValidityError,
)
from sealpod.verify.trust import TrustAnchors, fingerprint

CACHE_SIZE = 4096
# What cryptography raises on hostile DER, at load time or lazily (extensions, names).
X509_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)
_KEY_ERRORS: tuple[type[Exception], ...] = (UnsupportedAlgorithm, *X509_ERRORS)
_NOT_CA: tuple[type[Exception], ...] = (x509.ExtensionNotFound, *X509_ERRORS)
MAX_CHAIN_LENGTH = 5
P256_COORDINATE_SIZE = 32


def _utc(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _signature_bits_problem(der: bytes, spec: Any, field: str) -> str | None:
    """DER requires 0 unused bits in the signature BIT STRING (a whole ECDSA/RSA signature).

    The signature value is outside what is signed, so without this check a certificate or CRL
    has several encodings that all verify; sealpod accepts only the DER one.
    """
    try:
        contents = spec.load(der)[field].contents
    except (ValueError, TypeError, KeyError) as exc:
        return f"not DER ({exc})"
    if not contents or contents[0] != 0:
        return f"the {field} BIT STRING has unused bits (not DER)"
    return None


def _serial_problem(der: bytes) -> str | None:
    """A serial number that is zero or negative, which RFC 5280 forbids: refused here, before
    ``cryptography`` parses it (it warns today and means to raise "in a future release").
    DCAP chains never carry one; AMD's serial-0 VCEKs take their own path (:mod:`.amd`)."""
    try:
        serial = asn1_x509.Certificate.load(der)["tbs_certificate"]["serial_number"].native
    except (ValueError, TypeError, KeyError):
        return None  # malformed: cryptography's parser says how
    if isinstance(serial, int) and serial <= 0:
        return f"serial number is {serial}, expected a positive number (RFC 5280)"
    return None


@functools.lru_cache(maxsize=CACHE_SIZE)
def _load_cert(der: bytes) -> x509.Certificate | str:
    problem = _serial_problem(der)
    if problem is not None:
        return problem
    try:
        cert = x509.load_der_x509_certificate(der)
        cert.subject.rfc4514_string()  # names and extensions parse lazily: force them here
        cert.issuer.rfc4514_string()
        _ = cert.extensions
        _ = cert.not_valid_before_utc, cert.not_valid_after_utc
    except X509_ERRORS as exc:
        return f"{type(exc).__name__}: {exc}"
    return _signature_bits_problem(der, asn1_x509.Certificate, "signature_value") or cert


def load_certificate(der: bytes, *, what: str, step: str) -> x509.Certificate:
    """Parse a DER certificate (cached by content).

    Raises:
        CertificateError: the bytes are not a certificate.
    """
    cert = _load_cert(bytes(der))
    if isinstance(cert, str):
        raise CertificateError(f"{what} does not parse as X.509: {cert}", step=step)
    return cert


@functools.lru_cache(maxsize=CACHE_SIZE)
def _split_pem(data: bytes) -> tuple[bytes, ...] | str:
    # The DER first (sealpod.crypto.pem says why not cryptography's PEM loader), then each
    # certificate through the same checks as a DER one.
    try:
        ders = pem.decode(data, max_blocks=MAX_CHAIN_LENGTH)
    except pem.PemError as exc:
        return str(exc)
    for der in ders:
        cert = _load_cert(der)
        if isinstance(cert, str):
            return cert
    return ders


def pem_chain_to_der(pem: str | bytes, *, what: str, step: str) -> tuple[bytes, ...]:
    """DER of each certificate in a PEM chain, in order (cached by content).

    Raises:
        CertificateError: the text holds no certificate or a block does not parse.
    """
    data = pem.encode("ascii", "replace") if isinstance(pem, str) else bytes(pem)
    out = _split_pem(data)
    if isinstance(out, str):
        raise CertificateError(f"{what} is not a PEM certificate chain: {out}", step=step)
    return out


@functools.lru_cache(maxsize=CACHE_SIZE)
def _issued_by(child_der: bytes, parent_der: bytes) -> str | None:
    """None when ``parent`` signed ``child`` (names and signature); else the reason."""
    child = _parsed_cert(child_der)
    parent = _parsed_cert(parent_der)
    try:
        child.verify_directly_issued_by(parent)
    except ValueError as exc:
        return f"issuer name does not match the next certificate's subject ({exc})"
    except InvalidSignature:
        return "signature does not verify with the issuer's key"
    except _KEY_ERRORS as exc:
        return f"unsupported key or signature algorithm ({exc})"
    return None


def _is_ca(cert: x509.Certificate) -> tuple[bool, int | None]:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except _NOT_CA:
        return False, None
    return bc.ca, bc.path_length


def check_validity(cert: x509.Certificate, *, now: datetime, what: str, step: str) -> None:
    """Raises ValidityError unless notBefore <= now <= notAfter (the subject is named)."""
    not_before, not_after = _validity(cert)
    if not_before <= now <= not_after:
        return
    what = f"{what} ({cert.subject.rfc4514_string()})"
    if now < cert.not_valid_before_utc:
        raise ValidityError(
            f"{what} is not yet valid: valid from {_utc(cert.not_valid_before_utc)}, "
            f"now is {_utc(now)}",
            step=step,
            expected=f">= {_utc(cert.not_valid_before_utc)}",
            actual=_utc(now),
        )
    if now > cert.not_valid_after_utc:
        raise ValidityError(
            f"{what} has expired: valid until {_utc(cert.not_valid_after_utc)}, now is {_utc(now)}",
            step=step,
            expected=f"<= {_utc(cert.not_valid_after_utc)}",
            actual=_utc(now),
        )


def _validity(cert: x509.Certificate) -> tuple[datetime, datetime]:
    return cert.not_valid_before_utc, cert.not_valid_after_utc


@dataclass(frozen=True, slots=True)
class VerifiedChain:
    """A chain whose signatures, CA flags and root pin have been checked (leaf first)."""

    certificates: tuple[x509.Certificate, ...]
    ders: tuple[bytes, ...]
    root_fingerprint: bytes
    simulated: bool

    @property
    def leaf(self) -> x509.Certificate:
        return self.certificates[0]

    @property
    def root_der(self) -> bytes:
        return self.ders[-1]


@functools.lru_cache(maxsize=CACHE_SIZE)
def _chain_structure(ders: tuple[bytes, ...]) -> str | None:
    """None when every link of the chain is sound (signatures, CA flags, path lengths)."""
    certs = [_load_cert(d) for d in ders]
    for i, cert in enumerate(certs):
        if isinstance(cert, str):
            return f"certificate {i} does not parse as X.509: {cert}"
    for i in range(len(ders)):
        parent_index = min(i + 1, len(ders) - 1)  # the root signs itself
        reason = _issued_by(ders[i], ders[parent_index])
        if reason is not None:
            role = "root (self-signature)" if i == len(ders) - 1 else f"certificate {i}"
            return f"{role}: {reason}"
        if i > 0:
            parent = _parsed_cert(ders[i])
            ca, path_length = _is_ca(parent)
            if not ca:
                return f"certificate {i} issues certificate {i - 1} but is not a CA"
            if path_length is not None and i - 1 > path_length:
                return f"certificate {i} allows a path length of {path_length}, chain needs {i - 1}"
    return None


def verify_chain(
    ders: Sequence[bytes],
    *,
    trust: TrustAnchors,
    now: datetime,
    what: str,
    step: str,
    vendor: str = "intel",
) -> VerifiedChain:
    """Verify a leaf-first chain up to a pinned root, with every certificate valid at ``now``.

    ``vendor`` selects which pinned set counts as hardware ("intel" or "amd"); a root in
    ``trust.sim_roots`` is accepted and reported as simulated.

    Raises:
        CertificateError: wrong length, a certificate does not parse, a signature or CA flag
            is wrong.
        UntrustedRoot: the last certificate's fingerprint is not pinned.
        ValidityError: a certificate is expired or not yet valid at ``now``.
    """
    chain = tuple(bytes(d) for d in ders)
    if not 2 <= len(chain) <= MAX_CHAIN_LENGTH:
        raise CertificateError(
            f"{what} has {len(chain)} certificates, expected 2 to {MAX_CHAIN_LENGTH}",
            step=step,
        )
    root_fp = fingerprint(chain[-1])
    vendor_roots = trust.intel_roots if vendor == "intel" else trust.amd_arks
    simulated = trust.is_sim_root(root_fp)
    if root_fp not in vendor_roots and not simulated:
        raise UntrustedRoot(
            f"{what} ends at a root whose SHA-256 fingerprint {root_fp.hex()} is not pinned",
            step=step,
            expected=", ".join(sorted(fp.hex() for fp in vendor_roots)) or "a pinned root",
            actual=root_fp.hex(),
        )
    problem = _chain_structure(chain)
    if problem is not None:
        raise CertificateError(f"{what}: {problem}", step=step)
    certs = tuple(load_certificate(d, what=what, step=step) for d in chain)
    names = ["leaf"] + [f"CA {i}" for i in range(1, len(certs) - 1)] + ["root"]
    for cert, name in zip(certs, names, strict=True):
        check_validity(cert, now=now, what=f"{what} {name}", step=step)
    return VerifiedChain(
        certificates=certs, ders=chain, root_fingerprint=root_fp, simulated=simulated
    )


# --- CRLs ----------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=CACHE_SIZE)
def _load_crl(der: bytes) -> x509.CertificateRevocationList | str:
    try:
        crl = x509.load_der_x509_crl(der)
        crl.issuer.rfc4514_string()  # parsed lazily: force it here
        _ = crl.extensions, crl.last_update_utc, crl.next_update_utc
        _ = [entry.serial_number for entry in crl]
    except X509_ERRORS as exc:
        return f"{type(exc).__name__}: {exc}"
    return _signature_bits_problem(der, asn1_crl.CertificateList, "signature") or crl


def _parsed_cert(der: bytes) -> x509.Certificate:
    """The cached certificate; callers parsed it before, so a failure here is a typed error."""
    cert = _load_cert(der)
    if isinstance(cert, str):
        raise CertificateError(f"certificate does not parse as X.509: {cert}")
    return cert


def _parsed_crl(der: bytes) -> x509.CertificateRevocationList:
    """The cached CRL; callers parsed it before, so a failure here is a typed error."""
    crl = _load_crl(der)
    if isinstance(crl, str):
        raise CertificateError(f"CRL does not parse: {crl}")
    return crl


@functools.lru_cache(maxsize=CACHE_SIZE)
def _crl_issued_by_name(crl_der: bytes, issuer_der: bytes) -> bool:
    crl, issuer = _parsed_crl(crl_der), _parsed_cert(issuer_der)
    return bool(crl.issuer == issuer.subject)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _crl_signed_by(crl_der: bytes, issuer_der: bytes) -> bool:
    crl = _parsed_crl(crl_der)
    issuer = _parsed_cert(issuer_der)
    try:
        return bool(crl.is_signature_valid(issuer.public_key()))  # type: ignore[arg-type]
    except _KEY_ERRORS:
        return False


@functools.lru_cache(maxsize=CACHE_SIZE)
def _revoked_serials(crl_der: bytes) -> frozenset[int]:
    crl = _parsed_crl(crl_der)
    return frozenset(entry.serial_number for entry in crl)


def check_crl(
    crl_der: bytes, issuer_der: bytes, *, now: datetime, what: str, step: str
) -> x509.CertificateRevocationList:
    """Check a CRL's issuer, signature and window (thisUpdate <= now < nextUpdate).

    Raises:
        CertificateError: it does not parse, names another issuer, or its signature fails.
        ValidityError: ``now`` is outside its window or it has no nextUpdate.
    """
    crl = _load_crl(bytes(crl_der))
    if isinstance(crl, str):
        raise CertificateError(f"{what} does not parse as a DER CRL: {crl}", step=step)
    issuer = load_certificate(issuer_der, what=f"{what} issuer", step=step)
    if not _crl_issued_by_name(bytes(crl_der), bytes(issuer_der)):
        raise CertificateError(
            f"{what} was issued by {crl.issuer.rfc4514_string()}, expected "
            f"{issuer.subject.rfc4514_string()} (no certificate revocation list for this issuer)",
            step=step,
            expected=issuer.subject.rfc4514_string(),
            actual=crl.issuer.rfc4514_string(),
        )
    if not _crl_signed_by(bytes(crl_der), bytes(issuer_der)):
        raise CertificateError(f"{what} signature does not verify with its issuer", step=step)
    this_update = crl.last_update_utc
    next_update = crl.next_update_utc
    if next_update is None:
        raise ValidityError(f"{what} has no nextUpdate", step=step)
    if now < this_update:
        raise ValidityError(
            f"{what} is not yet valid: thisUpdate {_utc(this_update)}, now is {_utc(now)}",
            step=step,
            expected=f">= {_utc(this_update)}",
            actual=_utc(now),
        )
    if now >= next_update:
        raise ValidityError(
            f"{what} is not valid any more: nextUpdate {_utc(next_update)}, now is {_utc(now)}",
            step=step,
            expected=f"< {_utc(next_update)}",
            actual=_utc(now),
        )
    return crl


def check_not_revoked(crl_der: bytes, cert: x509.Certificate, *, what: str, step: str) -> None:
    """Raises RevokedError when the CRL (already checked) lists the certificate's serial."""
    if cert.serial_number in _revoked_serials(bytes(crl_der)):
        raise RevokedError(f"{what} (serial {cert.serial_number:x}) is revoked", step=step)


# --- raw ECDSA P-256 -----------------------------------------------------------------------------
@functools.lru_cache(maxsize=CACHE_SIZE)
def _p256_verifies(key: bytes, signature: bytes, data: bytes) -> bool:
    """``key``: SEC1 point or DER SubjectPublicKeyInfo; ``signature``: raw r || s."""
    if len(signature) != 2 * P256_COORDINATE_SIZE or not key:
        return False
    try:
        if key[:1] == b"\x04":
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key)
        else:
            loaded = load_der_public_key(key)
            if not isinstance(loaded, ec.EllipticCurvePublicKey):
                return False
            public = loaded
        if not isinstance(public.curve, ec.SECP256R1):
            return False
        r = int.from_bytes(signature[:P256_COORDINATE_SIZE], "big")
        s = int.from_bytes(signature[P256_COORDINATE_SIZE:], "big")
        public.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def p256_verifies(key: bytes, signature: bytes, data: bytes) -> bool:
    """True when a raw r||s ECDSA-P256-SHA256 signature over ``data`` verifies with ``key``
    (an uncompressed SEC1 point or DER SubjectPublicKeyInfo). Cached by content."""
    return _p256_verifies(bytes(key), bytes(signature), bytes(data))


def spki_der(cert: x509.Certificate) -> bytes:
    """The certificate's public key as DER SubjectPublicKeyInfo (empty if it cannot be loaded,
    which no signature will then verify with)."""
    try:
        return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    except _KEY_ERRORS:
        return b""


def clear_caches() -> None:
    """Forget every cached fact (for cold-cache benchmarks and tests)."""
    for fn in (
        _load_cert,
        _split_pem,
        _issued_by,
        _chain_structure,
        _load_crl,
        _crl_signed_by,
        _crl_issued_by_name,
        _revoked_serials,
        _p256_verifies,
    ):
        fn.cache_clear()
