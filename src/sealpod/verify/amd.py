"""AMD SEV-SNP certificates: VCEK / VLEK leaves, ASK / ASVK intermediates, ARK roots.

Facts used here (AMD "Versioned Chip Endorsement Key (VCEK) Certificate and KDS Interface
Specification", pub. 57230, and the certificates AMD KDS serves):

* ARK and ASK/ASVK are RSA-4096 certificates signed with RSASSA-PSS, SHA-384, MGF1-SHA-384 and a
  48-byte salt; the ARK signs itself, the ASK (VCEK issuer) and the ASVK (VLEK issuer). The VCEK
  and VLEK are ECDSA P-384 keys, also signed with that PSS profile.
* A VCEK or VLEK has **serial number 0**. ``cryptography`` deprecates loading such certificates
  (a ``CryptographyDeprecationWarning`` today, an exception "in a future release"), so
  :func:`load_certificate` re-encodes the certificate with serial 1 through asn1crypto before
  handing it to ``cryptography``, keeps the original TBS bytes and signature for verification,
  and checks that the re-encoding differs from the input in exactly that one byte. That is
  thread-safe (no process-wide warning filter is touched, which ``warnings.catch_warnings`` would
  do) and keeps working when ``cryptography`` turns the warning into an error.
* Extensions under 1.3.6.1.4.1.3704.1: .1 structVersion, .2 productName (IA5String, e.g.
  "Milan-B0", "Genoa", "Turin"), .3.1 blSPL, .3.2 teeSPL, .3.3 snpSPL, .3.8 ucodeSPL, .3.9 fmcSPL
  (Turin), .4 hwID (VCEK only; 64 bytes, 8 on Turin; its extnValue is the raw bytes in KDS
  certificates, an OCTET STRING around them in some others), .5 csp_id (VLEK only).

The ARK fingerprints are pinned in :mod:`sealpod.verify.trust`; :data:`ARK_PRODUCTS` maps them to
the product they anchor.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from asn1crypto import core as asn1_core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from sealpod.crypto import pem as _pem
from sealpod.errors import CertificateError, ValidityError
from sealpod.evidence.snp_report import SnpProduct, TcbVersion
from sealpod.verify.trust import (
    AMD_ARK_GENOA_SHA256,
    AMD_ARK_MILAN_SHA256,
    AMD_ARK_TURIN_SHA256,
)

#: Which product each pinned ARK anchors.
ARK_PRODUCTS: Mapping[bytes, SnpProduct] = MappingProxyType(
    {
        AMD_ARK_MILAN_SHA256: SnpProduct.MILAN,
        AMD_ARK_GENOA_SHA256: SnpProduct.GENOA,
        AMD_ARK_TURIN_SHA256: SnpProduct.TURIN,
    }
)

AMD_OID = "1.3.6.1.4.1.3704.1"
OID_STRUCT_VERSION = AMD_OID + ".1"
OID_PRODUCT_NAME = AMD_OID + ".2"
OID_BL_SPL = AMD_OID + ".3.1"
OID_TEE_SPL = AMD_OID + ".3.2"
OID_SNP_SPL = AMD_OID + ".3.3"
OID_UCODE_SPL = AMD_OID + ".3.8"
OID_FMC_SPL = AMD_OID + ".3.9"
OID_HWID = AMD_OID + ".4"
OID_CSP_ID = AMD_OID + ".5"

HWID_SIZES = (64, 8)  # Milan/Genoa, Turin
MAX_CERT_SIZE = 16 * 1024
MAX_CHAIN_SIZE = 64 * 1024
MAX_CHAIN_CERTS = 8
MAX_CRL_SIZE = 1024 * 1024

#: AMD's signature profile for ARK, ASK/ASVK, VCEK/VLEK and CRLs.
PSS_SHA384 = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
#: The DER AlgorithmIdentifiers that say exactly that profile (RFC 4055: RSASSA-PSS with
#: hashAlgorithm SHA-384, maskGenAlgorithm MGF1 with SHA-384, saltLength 48). AMD's KDS
#: certificates also spell out the default trailerField (1); encoders such as ``cryptography``
#: omit it. Any other encoding or parameter is refused.
_PSS_SHA384_PREFIX = (
    "06092a864886f70d01010a"  # id-RSASSA-PSS
    "a00f300d06096086480165030402020500"  # [0] hashAlgorithm sha384 (NULL parameters)
    "a11c301a06092a864886f70d010108300d06096086480165030402020500"  # [1] MGF1 with sha384
    "a203020130"  # [2] saltLength 48
)
AMD_PSS_ALGORITHM_DERS = frozenset(
    {
        bytes.fromhex("3041" + _PSS_SHA384_PREFIX[:22] + "3034" + _PSS_SHA384_PREFIX[22:]),
        bytes.fromhex(
            "3046" + _PSS_SHA384_PREFIX[:22] + "3039" + _PSS_SHA384_PREFIX[22:] + "a303020101"
        ),  # [3] trailerField 1, as AMD writes it
    }
)
CACHE_SIZE = 512


@dataclass(frozen=True, slots=True, kw_only=True)
class AmdCertificate:
    """A certificate as received: ``der``, the exact signed ``tbs`` bytes and ``signature``.

    ``cert`` is the ``cryptography`` view; for a serial-0 certificate it was parsed from a copy
    whose serial is 1 (see the module docstring), so read the serial from ``serial``.
    """

    cert: x509.Certificate
    serial: int
    fingerprint: bytes
    der: bytes = field(repr=False)
    tbs: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    #: DER of the signed (TBS) AlgorithmIdentifier.
    signature_algorithm_der: bytes = field(default=b"", repr=False)

    @property
    def common_name(self) -> str:
        names = self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        value = names[0].value if names else ""
        return value if isinstance(value, str) else value.decode("utf-8", "replace")

    @property
    def self_issued(self) -> bool:
        return self.cert.issuer == self.cert.subject


def load_certificate(data: bytes, *, role: str) -> AmdCertificate:
    """Load one DER (or single-PEM) certificate, tolerating AMD's serial number 0.

    Results are cached by content (a certificate's bytes fully determine them).

    Raises:
        CertificateError: not a certificate, too large, a negative serial, an outer signature
            algorithm that differs from the signed one, or a serial-0 re-encoding that would
            change more than the serial.
    """
    if _pem.is_pem(data):
        blocks = pem_blocks(data, role=role)
        if len(blocks) != 1:
            raise CertificateError(
                f"{role}: PEM holds {len(blocks)} certificates, expected 1",
                step=f"load {role}",
            )
        data = blocks[0]
    if not data or len(data) > MAX_CERT_SIZE:
        raise CertificateError(
            f"{role}: certificate is {len(data)} bytes, expected 1..{MAX_CERT_SIZE}",
            step=f"load {role}",
        )
    return _load_der(bytes(data), role)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _load_der(der: bytes, role: str) -> AmdCertificate:
    try:
        parsed = asn1_x509.Certificate.load(der, strict=True)
        tbs_node = parsed["tbs_certificate"]
        serial = int(tbs_node["serial_number"].native)
        tbs = bytes(tbs_node.dump())
        signature = bytes(parsed["signature_value"].native)
        # RFC 5280 4.1.1.2: the unsigned outer algorithm must equal the signed one in the TBS.
        signed_algorithm = bytes(tbs_node["signature"].dump())
        if bytes(parsed["signature_algorithm"].dump()) != signed_algorithm:
            raise CertificateError(
                f"{role}: signatureAlgorithm differs from the signed tbsCertificate.signature",
                step=f"load {role}",
            )
        if serial > 0:
            cert = x509.load_der_x509_certificate(der)
        elif serial == 0:
            cert = _load_serial_zero(der)
        else:
            raise CertificateError(
                f"{role}: serial number is negative ({serial})", step=f"load {role}"
            )
        # cryptography decodes some fields lazily: read every one used later, so that a
        # malformed field fails here, as a CertificateError, and not in the middle of a check.
        _ = (cert.subject, cert.issuer, cert.not_valid_before_utc, cert.not_valid_after_utc)
        _ = (cert.signature_algorithm_oid, cert.extensions, cert.public_key())
    except CertificateError:
        raise
    except Exception as exc:  # asn1crypto raises ValueError/TypeError/KeyError on hostile DER
        raise CertificateError(
            f"{role}: not a DER X.509 certificate ({type(exc).__name__})", step=f"load {role}"
        ) from exc
    return AmdCertificate(
        cert=cert,
        serial=serial,
        fingerprint=hashlib.sha256(der).digest(),
        der=der,
        tbs=tbs,
        signature=signature,
        signature_algorithm_der=signed_algorithm,
    )


def clear_caches() -> None:
    """Forget every cached certificate (for benchmarks of cold verification)."""
    _load_der.cache_clear()


def describe_algorithm(algorithm_der: bytes) -> str:
    """``rsassa_pss sha384/sha384/48``-style text for an AlgorithmIdentifier (for messages)."""
    try:
        algorithm = asn1_x509.SignedDigestAlgorithm.load(algorithm_der)
        name = str(algorithm["algorithm"].native)
        if name != "rsassa_pss":
            return name
        params = algorithm["parameters"].native or {}
        hash_name = (params.get("hash_algorithm") or {}).get("algorithm", "sha1")
        mgf = params.get("mask_gen_algorithm") or {}
        mgf_hash = (mgf.get("parameters") or {}).get("algorithm", "sha1")
        return f"{name} {hash_name}/{mgf_hash}/{params.get('salt_length', 20)}"
    except Exception:  # only used to word an error message
        return "unreadable algorithm"


def _load_serial_zero(der: bytes) -> x509.Certificate:
    """Parse a serial-0 certificate with ``cryptography`` via a copy whose serial is 1."""
    copy = asn1_x509.Certificate.load(der, strict=True)
    copy["tbs_certificate"]["serial_number"] = 1
    patched = bytes(copy.dump())
    # The copy must be the input with the one-byte serial INTEGER content 0x00 -> 0x01, i.e. one
    # single bit, the lowest of a byte; anything else means asn1crypto re-encoded something that
    # cryptography would then read unsigned.
    diff = int.from_bytes(der, "big") ^ int.from_bytes(patched, "big")
    bit = diff.bit_length() - 1
    if len(patched) != len(der) or diff == 0 or diff & (diff - 1) or bit % 8:
        raise CertificateError("certificate with serial 0 is not in canonical DER")
    return x509.load_der_x509_certificate(patched)


def pem_blocks(pem_text: bytes, *, role: str = "certificate chain") -> list[bytes]:
    """The DER of every ``CERTIFICATE`` block in ``pem_text`` (bounded in size and count).

    The armour is removed without parsing the certificates (:mod:`sealpod.crypto.pem` says why
    not with ``cryptography``), so that serial-0 certificates can go through
    :func:`load_certificate`.

    Raises:
        CertificateError: too large, no block, too many blocks or bad base64.
    """
    if len(pem_text) > MAX_CHAIN_SIZE:
        raise CertificateError(
            f"{role}: PEM is {len(pem_text)} bytes, expected at most {MAX_CHAIN_SIZE}",
            step=f"load {role}",
        )
    try:
        return list(_pem.decode(pem_text, max_blocks=MAX_CHAIN_CERTS))
    except _pem.PemError as exc:
        raise CertificateError(f"{role}: {exc}", step=f"load {role}") from exc


def load_chain(pem: bytes) -> list[AmdCertificate]:
    """Load every certificate of a PEM chain (ASK and/or ASVK, ARK), in file order.

    Raises:
        CertificateError: see :func:`pem_blocks` and :func:`load_certificate`.
    """
    return [load_certificate(der, role="certificate chain") for der in pem_blocks(pem)]


def check_signed_by(child: AmdCertificate, issuer: AmdCertificate, *, step: str) -> None:
    """Check that ``issuer`` signed ``child`` with AMD's RSA-PSS SHA-384 (salt 48) profile.

    Raises:
        CertificateError: issuer name differs, the issuer is no RSA CA, the algorithm is not
            RSASSA-PSS/SHA-384, or the signature does not verify.
    """
    child_cn, issuer_cn = child.common_name, issuer.common_name
    if child.cert.issuer != issuer.cert.subject:
        raise CertificateError(
            f"{child_cn!r} was issued by {child.cert.issuer.rfc4514_string()!r}, not by "
            f"{issuer.cert.subject.rfc4514_string()!r}",
            step=step,
            expected=issuer.cert.subject.rfc4514_string(),
            actual=child.cert.issuer.rfc4514_string(),
        )
    _require_ca(issuer, step=step)
    if child.signature_algorithm_der not in AMD_PSS_ALGORITHM_DERS:
        actual = describe_algorithm(child.signature_algorithm_der)
        raise CertificateError(
            f"{child_cn!r} signature algorithm is {actual}, expected RSASSA-PSS with SHA-384, "
            "MGF1-SHA-384 and a 48-byte salt",
            step=step,
            expected="rsassa_pss sha384/sha384/48",
            actual=actual,
        )
    key = issuer.cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise CertificateError(f"{issuer_cn!r} does not hold an RSA key", step=step)
    try:
        key.verify(child.signature, child.tbs, PSS_SHA384, hashes.SHA384())
    except InvalidSignature as exc:
        raise CertificateError(
            f"signature of {child_cn!r} does not verify with the key of {issuer_cn!r}",
            step=step,
        ) from exc


def _require_ca(cert: AmdCertificate, *, step: str) -> None:
    try:
        bc = cert.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound as exc:
        raise CertificateError(
            f"{cert.common_name!r} has no basicConstraints, so it may not issue certificates",
            step=step,
        ) from exc
    except ValueError as exc:  # duplicate or malformed extension
        raise CertificateError(f"{cert.common_name!r} extensions are malformed", step=step) from exc
    if not bc.ca:
        raise CertificateError(
            f"{cert.common_name!r} is not a CA (basicConstraints ca=false)", step=step
        )


def check_validity(cert: AmdCertificate, now: datetime, *, role: str, step: str) -> None:
    """Check ``not_before <= now <= not_after``.

    Raises:
        ValidityError: expired or not yet valid.
    """
    nb, na = cert.cert.not_valid_before_utc, cert.cert.not_valid_after_utc
    if now < nb:
        raise ValidityError(
            f"{role} {cert.common_name!r} is not yet valid at {now.isoformat()} "
            f"(valid from {nb.isoformat()})",
            step=step,
            expected=f">= {nb.isoformat()}",
            actual=now.isoformat(),
        )
    if now > na:
        raise ValidityError(
            f"{role} {cert.common_name!r} expired at {na.isoformat()} (now {now.isoformat()})",
            step=step,
            expected=f"<= {na.isoformat()}",
            actual=now.isoformat(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class EndorsementKey:
    """What a VCEK or VLEK certificate certifies."""

    kind: str  # "vcek" or "vlek"
    product_name: str  # as in the certificate, e.g. "Milan-B0"
    product: SnpProduct
    struct_version: int
    tcb: TcbVersion  # fmc set for Turin
    hwid: bytes | None  # VCEK only
    csp_id: str | None  # VLEK only
    public_key: ec.EllipticCurvePublicKey = field(repr=False)


def parse_endorsement_key(cert: AmdCertificate) -> EndorsementKey:
    """Read the AMD extensions and the P-384 key of a VCEK or VLEK.

    A certificate with a hwID extension is a VCEK; one with a csp_id and no hwID is a VLEK.

    Raises:
        CertificateError: a missing or malformed extension, an unknown product, a hwID of the
            wrong size, or a key that is not ECDSA P-384.
    """
    step = "Step 2: endorsement key certificate extensions"
    exts: dict[str, bytes] = {}
    try:
        extensions = cert.cert.extensions
    except ValueError as exc:
        raise CertificateError("endorsement key extensions are malformed", step=step) from exc
    for ext in extensions:
        if ext.oid.dotted_string.startswith(AMD_OID + ".") and isinstance(
            ext.value, x509.UnrecognizedExtension
        ):
            exts[ext.oid.dotted_string] = ext.value.value

    def optional_integer(oid: str, name: str) -> int | None:
        value = exts.get(oid)
        if value is None:
            return None
        try:
            number = asn1_core.Integer.load(value, strict=True).native
        except (ValueError, TypeError) as exc:
            raise CertificateError(f"extension {name} is not a DER INTEGER", step=step) from exc
        if not isinstance(number, int) or not 0 <= number <= 255:
            raise CertificateError(
                f"extension {name} is {number}, expected 0..255", step=step, actual=number
            )
        return number

    def integer(oid: str, name: str) -> int:
        number = optional_integer(oid, name)
        if number is None:
            raise CertificateError(
                f"endorsement key certificate lacks the {name} extension ({oid})", step=step
            )
        return number

    def ia5(oid: str, name: str) -> str | None:
        value = exts.get(oid)
        if value is None:
            return None
        try:
            text = asn1_core.IA5String.load(value, strict=True).native
        except (ValueError, TypeError) as exc:
            raise CertificateError(f"extension {name} is not a DER IA5String", step=step) from exc
        return str(text)

    product_name = ia5(OID_PRODUCT_NAME, "productName")
    if product_name is None:
        raise CertificateError(
            f"endorsement key certificate lacks productName ({OID_PRODUCT_NAME})", step=step
        )
    product = _product(product_name)
    if product is None:
        raise CertificateError(
            f"productName is {product_name!r}, expected Milan, Genoa or Turin",
            step=step,
            expected="Milan | Genoa | Turin",
            actual=product_name,
        )
    struct_version = optional_integer(OID_STRUCT_VERSION, "structVersion") or 0
    bl = integer(OID_BL_SPL, "blSPL")
    tee = integer(OID_TEE_SPL, "teeSPL")
    snp = integer(OID_SNP_SPL, "snpSPL")
    ucode = integer(OID_UCODE_SPL, "ucodeSPL")
    fmc = (
        integer(OID_FMC_SPL, "fmcSPL")
        if product is SnpProduct.TURIN
        else optional_integer(OID_FMC_SPL, "fmcSPL")
    )
    tcb = TcbVersion(
        bootloader=bl,
        tee=tee,
        snp=snp,
        microcode=ucode,
        fmc=fmc if product is SnpProduct.TURIN else None,
    )
    hwid = _hwid(exts.get(OID_HWID), step=step)
    csp_id = ia5(OID_CSP_ID, "csp_id")
    if hwid is not None:
        kind = "vcek"
    elif csp_id is not None:
        kind = "vlek"
    else:
        raise CertificateError(
            "endorsement key certificate has neither hwID (VCEK) nor csp_id (VLEK)", step=step
        )
    key = cert.cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise CertificateError(
            f"{kind.upper()} key is {type(key).__name__}, expected ECDSA P-384", step=step
        )
    return EndorsementKey(
        kind=kind,
        product_name=product_name,
        product=product,
        struct_version=struct_version,
        tcb=tcb,
        hwid=hwid,
        csp_id=csp_id,
        public_key=key,
    )


def _product(name: str) -> SnpProduct | None:
    # KDS names the stepping for Milan ("Milan-B0"); Genoa and Turin certificates do not.
    base = name.split("-", 1)[0]
    for product in SnpProduct:
        if product.value == base:
            return product
    return None


def _hwid(value: bytes | None, *, step: str) -> bytes | None:
    """The hwID extension: raw bytes (KDS) or wrapped in an OCTET STRING (some issuers)."""
    if value is None:
        return None
    if len(value) in HWID_SIZES:
        return value
    if len(value) - 2 in HWID_SIZES and value[0] == 0x04 and value[1] == len(value) - 2:
        return value[2:]
    raise CertificateError(
        f"hwID extension is {len(value)} bytes, expected 64 or 8 (raw) or an OCTET STRING of them",
        step=step,
        expected="64 or 8 bytes",
        actual=len(value),
    )


def product_of_chain_name(common_name: str) -> SnpProduct | None:
    """The product an AMD CA name refers to ("ARK-Genoa", "SEV-Milan", "SEV-VLEK-Turin")."""
    return _product(common_name.rsplit("-", 1)[-1]) if "-" in common_name else None


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """Load a DER or PEM CRL (bounded in size).

    Raises:
        CertificateError: too large or not a CRL.
    """
    if not data or len(data) > MAX_CRL_SIZE:
        raise CertificateError(
            f"CRL is {len(data)} bytes, expected 1..{MAX_CRL_SIZE}", step="load CRL"
        )
    try:
        if _pem.is_pem(data):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise CertificateError("CRL is not a DER or PEM X.509 CRL", step="load CRL") from exc


def split_certificates(pem: bytes) -> tuple[bytes, bytes]:
    """Split PEM holding a VCEK/VLEK and its CAs into (leaf DER, PEM of the others).

    The leaf is the certificate carrying AMD's productName extension (VCEK and VLEK do; ASK,
    ASVK and ARK do not). Used for evidence envelopes, whose ``certificates`` hold all three.

    Raises:
        CertificateError: no or several such leaves, or a block that does not load.
    """
    leaves: list[bytes] = []
    others: list[bytes] = []
    for der in pem_blocks(pem, role="evidence certificates"):
        cert = load_certificate(der, role="evidence certificates")
        try:
            oids = {ext.oid.dotted_string for ext in cert.cert.extensions}
        except ValueError as exc:
            raise CertificateError(
                "evidence certificates: malformed extensions", step="load certificates"
            ) from exc
        (leaves if OID_PRODUCT_NAME in oids else others).append(der)
    if len(leaves) != 1:
        raise CertificateError(
            f"evidence certificates hold {len(leaves)} VCEK/VLEK certificates, expected 1",
            step="load certificates",
        )
    return leaves[0], _pem.encode_certificates(others).encode("ascii")
