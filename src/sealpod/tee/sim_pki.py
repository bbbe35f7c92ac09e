"""Certificates, keys and CRLs of the simulated platform, in the vendors' real profiles.

Intel side (SGX PCK Certificate and CRL Profile): an ECDSA P-256 root CA (path length 1), a PCK
Platform CA (path length 0) and PCK leaves carrying the SGX extension
``1.2.840.113741.1.13.1`` (PPID, TCB with 16 component SVNs + PCESVN + CPUSVN, PCE-ID, FMSPC,
SGX type), a TCB Signing certificate for TCB Info and QE Identity, and the root and PCK CRLs.

AMD side (VCEK certificate specification, pub. 57230): RSA-4096 ARK and ASK signed with
RSASSA-PSS (SHA-384, salt 48), a P-384 VCEK carrying the ``1.3.6.1.4.1.3704.1`` extensions
(struct version, product name, bootloader/TEE/SNP/microcode SPLs, hwID).

Every subject says SIMULATED, so a simulated certificate is never mistaken for a vendor's.
The DER encodings of the custom extensions come from asn1crypto; everything else from
``cryptography``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from sealpod.errors import CryptoError
from sealpod.verify.pck import SgxEntries, SgxEntry, SgxType

SIM_ORG = "sealpod SIMULATED platform - NO hardware protection"
SIM_COUNTRY = "XX"

# Intel SGX PCK Certificate and CRL Profile, section "SGX Extensions".
SGX_EXTENSIONS_OID = "1.2.840.113741.1.13.1"
_SGX_PPID = SGX_EXTENSIONS_OID + ".1"
_SGX_TCB = SGX_EXTENSIONS_OID + ".2"
_SGX_PCEID = SGX_EXTENSIONS_OID + ".3"
_SGX_FMSPC = SGX_EXTENSIONS_OID + ".4"
_SGX_TYPE = SGX_EXTENSIONS_OID + ".5"
SGX_TCB_COMPONENTS = 16
PPID_SIZE = 16
CPUSVN_SIZE = 16
FMSPC_SIZE = 6
PCEID_SIZE = 2

# AMD VCEK certificate extensions (KDS spec, "VCEK certificate extensions").
AMD_OID = "1.3.6.1.4.1.3704.1"
_AMD_STRUCT_VERSION = AMD_OID + ".1"
_AMD_PRODUCT_NAME = AMD_OID + ".2"
_AMD_BL_SPL = AMD_OID + ".3.1"
_AMD_TEE_SPL = AMD_OID + ".3.2"
_AMD_SNP_SPL = AMD_OID + ".3.3"
_AMD_SPL_4_TO_7 = tuple(AMD_OID + f".3.{i}" for i in range(4, 8))
_AMD_UCODE_SPL = AMD_OID + ".3.8"
_AMD_HWID = AMD_OID + ".4"
HWID_SIZE = 64

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True, slots=True, kw_only=True)
class PckTcb:
    """The TCB a PCK certificate certifies: 16 SGX component SVNs, PCESVN and CPUSVN."""

    components: tuple[int, ...]
    pce_svn: int
    cpu_svn: bytes

    def __post_init__(self) -> None:
        if len(self.components) != SGX_TCB_COMPONENTS:
            raise ValueError(f"components has {len(self.components)} entries, expected 16")
        if any(not 0 <= c <= 255 for c in self.components):
            raise ValueError("every SGX TCB component SVN must fit in a byte")
        if not 0 <= self.pce_svn <= 0xFFFF:
            raise ValueError("pce_svn must fit in 16 bits")
        if len(self.cpu_svn) != CPUSVN_SIZE:
            raise ValueError(f"cpu_svn is {len(self.cpu_svn)} bytes, expected {CPUSVN_SIZE}")


def sgx_extension_der(
    *, ppid: bytes, tcb: PckTcb, pce_id: bytes, fmspc: bytes, sgx_type: int = 0
) -> bytes:
    """DER of the Intel SGX extension value (a SEQUENCE of (OID, value) pairs)."""
    if len(ppid) != PPID_SIZE or len(pce_id) != PCEID_SIZE or len(fmspc) != FMSPC_SIZE:
        raise ValueError("ppid, pce_id and fmspc must be 16, 2 and 6 bytes")
    if sgx_type not in (0, 1, 2):
        raise ValueError(f"sgx_type is {sgx_type}, expected 0 (standard), 1 or 2 (scalable)")
    tcb_entries = [
        SgxEntry({"id": f"{_SGX_TCB}.{i + 1}", "value": core.Integer(svn)})
        for i, svn in enumerate(tcb.components)
    ]
    tcb_entries.append(SgxEntry({"id": f"{_SGX_TCB}.17", "value": core.Integer(tcb.pce_svn)}))
    tcb_entries.append(SgxEntry({"id": f"{_SGX_TCB}.18", "value": core.OctetString(tcb.cpu_svn)}))
    entries = SgxEntries(
        [
            SgxEntry({"id": _SGX_PPID, "value": core.OctetString(ppid)}),
            SgxEntry({"id": _SGX_TCB, "value": SgxEntries(tcb_entries)}),
            SgxEntry({"id": _SGX_PCEID, "value": core.OctetString(pce_id)}),
            SgxEntry({"id": _SGX_FMSPC, "value": core.OctetString(fmspc)}),
            SgxEntry({"id": _SGX_TYPE, "value": SgxType(sgx_type)}),
        ]
    )
    return bytes(entries.dump())


@dataclass(frozen=True, slots=True, kw_only=True)
class SnpTcb:
    """SEV-SNP TCB_VERSION fields (Milan/Genoa layout) as the VCEK certifies them."""

    bootloader: int
    tee: int
    snp: int
    microcode: int

    def to_u64(self) -> int:
        """The TCB_VERSION u64 (SNP ABI spec table "TCB_VERSION structure", Milan/Genoa)."""
        for name in ("bootloader", "tee", "snp", "microcode"):
            if not 0 <= getattr(self, name) <= 255:
                raise ValueError(f"SNP TCB {name} must fit in a byte")
        return self.bootloader | self.tee << 8 | self.snp << 48 | self.microcode << 56


def vcek_extensions(
    *, product: str, hwid: bytes, tcb: SnpTcb
) -> list[x509.Extension[x509.ExtensionType]]:
    """The AMD VCEK extensions: values are DER INTEGER / IA5String, hwID the raw 64 bytes."""
    if len(hwid) != HWID_SIZE:
        raise ValueError(f"hwid is {len(hwid)} bytes, expected {HWID_SIZE}")

    def ext(oid: str, value: bytes) -> x509.Extension[x509.ExtensionType]:
        oid_obj = x509.ObjectIdentifier(oid)
        return x509.Extension(oid_obj, False, x509.UnrecognizedExtension(oid_obj, value))

    out = [
        ext(_AMD_STRUCT_VERSION, core.Integer(0).dump()),
        ext(_AMD_PRODUCT_NAME, core.IA5String(product).dump()),
        ext(_AMD_BL_SPL, core.Integer(tcb.bootloader).dump()),
        ext(_AMD_TEE_SPL, core.Integer(tcb.tee).dump()),
    ]
    out += [ext(oid, core.Integer(0).dump()) for oid in _AMD_SPL_4_TO_7]
    out += [
        ext(_AMD_SNP_SPL, core.Integer(tcb.snp).dump()),
        ext(_AMD_UCODE_SPL, core.Integer(tcb.microcode).dump()),
        ext(_AMD_HWID, hwid),
    ]
    return out


def sim_name(common_name: str) -> x509.Name:
    """A subject/issuer name that says SIMULATED in both CN and O."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, SIM_COUNTRY),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, SIM_ORG),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def new_ec_key(curve: ec.EllipticCurve) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve)


def new_rsa_key(bits: int = 4096) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def pss_sha384() -> padding.PSS:
    """RSASSA-PSS with SHA-384, MGF1-SHA-384 and a 48-byte salt, as AMD signs."""
    return padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)


@dataclass(frozen=True, slots=True, kw_only=True)
class Validity:
    not_before: dt.datetime
    not_after: dt.datetime


def issue_certificate(
    *,
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    issuer: x509.Certificate | None,
    issuer_key: PrivateKey,
    serial: int,
    validity: Validity,
    ca: bool,
    path_length: int | None = None,
    extensions: Sequence[x509.Extension[x509.ExtensionType]] = (),
    crl_url: str | None = None,
) -> x509.Certificate:
    """Issue one certificate; ``issuer=None`` self-signs.

    ``ca`` selects a CA profile (keyCertSign, CRL sign, with ``path_length``) or a leaf profile
    (digitalSignature, nonRepudiation). EC issuers sign with ECDSA-SHA256 (Intel; SHA-384 for
    P-384 keys), RSA issuers with RSASSA-PSS SHA-384 (AMD).
    """
    issuer_name = subject if issuer is None else issuer.subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(validity.not_before)
        .not_valid_after(validity.not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if not ca:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=False, path_length=None), critical=True
        ).add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=True, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
    else:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=path_length), critical=True
        ).add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
    if crl_url is not None:
        builder = builder.add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        [x509.UniformResourceIdentifier(crl_url)], None, None, None
                    )
                ]
            ),
            critical=False,
        )
    for ext in extensions:
        builder = builder.add_extension(ext.value, critical=ext.critical)
    return _sign(builder, issuer_key)


def _sign(builder: x509.CertificateBuilder, key: PrivateKey) -> x509.Certificate:
    if isinstance(key, rsa.RSAPrivateKey):
        return builder.sign(key, hashes.SHA384(), rsa_padding=pss_sha384())
    algorithm = hashes.SHA384() if key.curve.key_size > 256 else hashes.SHA256()
    return builder.sign(key, algorithm)


def issue_crl(
    *,
    issuer: x509.Certificate,
    issuer_key: PrivateKey,
    revoked_serials: Sequence[int],
    this_update: dt.datetime,
    next_update: dt.datetime,
    number: int,
) -> bytes:
    """A DER CRL signed by ``issuer`` (ECDSA-SHA256 for Intel CAs, RSA-PSS for AMD's ARK)."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    for serial in revoked_serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(this_update)
            .build()
        )
    if isinstance(issuer_key, rsa.RSAPrivateKey):
        crl = builder.sign(issuer_key, hashes.SHA384(), rsa_padding=pss_sha384())
    else:
        crl = builder.sign(issuer_key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.DER)


def fingerprint(cert: x509.Certificate) -> bytes:
    """SHA-256 of the certificate's DER, the form TrustAnchors pins."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()


def cert_pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def private_key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(pem: bytes, *, what: str) -> PrivateKey:
    """Load a PEM private key written by :func:`private_key_pem`.

    Raises:
        CryptoError: not a PEM EC or RSA private key (the message never includes the key).
    """
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CryptoError(f"simulated platform key {what!r} does not load") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CryptoError(f"simulated platform key {what!r} is {type(key).__name__}")
    return key


def load_certificate(pem: bytes, *, what: str) -> x509.Certificate:
    """Load one PEM certificate.

    Raises:
        CryptoError: not a PEM certificate.
    """
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise CryptoError(f"simulated platform certificate {what!r} does not load") from exc
