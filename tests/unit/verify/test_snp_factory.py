"""Test factory for SEV-SNP: a synthetic AMD-profile PKI (ARK -> ASK/ASVK -> VCEK/VLEK) and
signed reports. Imported by the other ``test_snp_*`` modules of this directory; the tests at the
bottom check that the factory produces what AMD's certificates look like."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from dataclasses import dataclass

from asn1crypto import core as asn1_core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from sealpod.evidence.snp_report import SIGNED_SIZE, SnpProduct, SnpReport, TcbVersion
from sealpod.verify import amd

PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
NOW = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
MILAN_TCB = TcbVersion(bootloader=3, tee=0, snp=8, microcode=115)
TURIN_TCB = TcbVersion(fmc=1, bootloader=2, tee=0, snp=5, microcode=9)


@functools.cache
def rsa_key(name: str) -> rsa.RSAPrivateKey:
    """RSA-2048 (AMD uses 4096; the profile is the same and tests stay fast)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def ec_key(name: str, curve: str = "p384") -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1() if curve == "p384" else ec.SECP256R1())


def amd_name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Advanced Micro Devices"),
        ]
    )


def ext(oid: str, der: bytes) -> x509.UnrecognizedExtension:
    return x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), der)


def integer(value: int) -> bytes:
    return bytes(asn1_core.Integer(value).dump())


def ia5(value: str) -> bytes:
    return bytes(asn1_core.IA5String(value).dump())


def ca_cert(
    cn: str,
    key: rsa.RSAPrivateKey,
    *,
    issuer: tuple[x509.Name, rsa.RSAPrivateKey] | None = None,
    serial: int = 0x10000,
    not_before: dt.datetime = T0,
    not_after: dt.datetime = T0 + dt.timedelta(days=25 * 365),
    ca: bool | None = True,
) -> x509.Certificate:
    issuer_name, issuer_key = issuer if issuer else (amd_name(cn), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(amd_name(cn))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), True)
    return builder.sign(issuer_key, hashes.SHA384(), rsa_padding=PSS)


def leaf_der(
    *,
    issuer: x509.Certificate,
    issuer_key: rsa.RSAPrivateKey,
    key: ec.EllipticCurvePrivateKey,
    product_name: str,
    tcb: TcbVersion,
    hwid: bytes | None,
    hwid_wrapped: bool = False,
    csp_id: str | None = None,
    serial_zero: bool = True,
    not_before: dt.datetime = T0,
    not_after: dt.datetime = T0 + dt.timedelta(days=7 * 365),
    drop: tuple[str, ...] = (),
    cn: str = "SEV-VCEK",
    pss: padding.PSS = PSS,
) -> bytes:
    """A VCEK/VLEK with AMD's extensions, serial 0 by default (re-signed via asn1crypto)."""
    exts = {
        amd.OID_STRUCT_VERSION: integer(1 if tcb.fmc is not None else 0),
        amd.OID_PRODUCT_NAME: ia5(product_name),
        amd.OID_BL_SPL: integer(tcb.bootloader),
        amd.OID_TEE_SPL: integer(tcb.tee),
        amd.OID_SNP_SPL: integer(tcb.snp),
        amd.OID_UCODE_SPL: integer(tcb.microcode),
    }
    if tcb.fmc is not None:
        exts[amd.OID_FMC_SPL] = integer(tcb.fmc)
    if hwid is not None:
        exts[amd.OID_HWID] = bytes(asn1_core.OctetString(hwid).dump()) if hwid_wrapped else hwid
    if csp_id is not None:
        exts[amd.OID_CSP_ID] = ia5(csp_id)
    builder = (
        x509.CertificateBuilder()
        .subject_name(amd_name(cn))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for oid, der in exts.items():
        if oid not in drop:
            builder = builder.add_extension(ext(oid, der), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA384(), rsa_padding=pss)
    der_bytes = cert.public_bytes(serialization.Encoding.DER)
    if not serial_zero:
        return der_bytes
    # cryptography refuses to build serial 0; AMD's VCEKs have it: re-encode and re-sign.
    parsed = asn1_x509.Certificate.load(der_bytes)
    tbs = parsed["tbs_certificate"]
    tbs["serial_number"] = 0
    tbs_der = tbs.dump(force=True)
    signature = issuer_key.sign(tbs_der, pss, hashes.SHA384())
    rebuilt = asn1_x509.Certificate(
        {
            "tbs_certificate": asn1_x509.TbsCertificate.load(tbs_der),
            "signature_algorithm": parsed["signature_algorithm"],
            "signature_value": signature,
        }
    )
    return bytes(rebuilt.dump())


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@dataclass(frozen=True, kw_only=True)
class Pki:
    product: SnpProduct
    ark: x509.Certificate
    ask: x509.Certificate
    asvk: x509.Certificate
    vcek: bytes
    vlek: bytes
    hwid: bytes
    tcb: TcbVersion

    @property
    def chain(self) -> bytes:
        """ASK then ARK (as KDS serves cert_chain)."""
        return pem(self.ask, self.ark)

    @property
    def vlek_chain(self) -> bytes:
        return pem(self.asvk, self.ark)

    @property
    def ark_fingerprint(self) -> bytes:
        import hashlib

        return hashlib.sha256(self.ark.public_bytes(serialization.Encoding.DER)).digest()


@functools.cache
def make_pki(product: SnpProduct = SnpProduct.MILAN, tag: str = "") -> Pki:
    """A full synthetic hierarchy for ``product`` (cached; ``tag`` makes an independent one)."""
    turin = product is SnpProduct.TURIN
    tcb = TURIN_TCB if turin else MILAN_TCB
    hwid = bytes(range(0xA0, 0xA8)) if turin else bytes(range(0x40, 0x80))
    ark_key = rsa_key(f"ark-{product}-{tag}")
    ark = ca_cert(f"ARK-{product.value}", ark_key)
    ask_key = rsa_key(f"ask-{product}-{tag}")
    ask = ca_cert(f"SEV-{product.value}", ask_key, issuer=(ark.subject, ark_key), serial=0x10001)
    asvk_key = rsa_key(f"asvk-{product}-{tag}")
    asvk = ca_cert(
        f"SEV-VLEK-{product.value}", asvk_key, issuer=(ark.subject, ark_key), serial=0x10101
    )
    name = "Milan-B0" if product is SnpProduct.MILAN else product.value
    vcek = leaf_der(
        issuer=ask, issuer_key=ask_key, key=ec_key(f"vcek-{product}-{tag}"),
        product_name=name, tcb=tcb, hwid=hwid,
    )  # fmt: skip
    vlek = leaf_der(
        issuer=asvk, issuer_key=asvk_key, key=ec_key(f"vlek-{product}-{tag}"),
        product_name=product.value, tcb=tcb, hwid=None, csp_id="CN=cloud.example",
        cn="SEV-VLEK",
    )  # fmt: skip
    return Pki(
        product=product, ark=ark, ask=ask, asvk=asvk, vcek=vcek, vlek=vlek, hwid=hwid, tcb=tcb
    )


def unsigned_report(pki: Pki, *, vlek: bool = False, **fields: object) -> SnpReport:
    turin = pki.product is SnpProduct.TURIN
    version = 3 if turin or vlek else 2
    cpuid: dict[str, int | None] = {"cpuid_fam_id": None, "cpuid_mod_id": None, "cpuid_step": None}
    if version >= 3:
        fam, model = {
            SnpProduct.MILAN: (0x19, 0x01),
            SnpProduct.GENOA: (0x19, 0x11),
            SnpProduct.TURIN: (0x1A, 0x02),
        }[pki.product]
        cpuid = {"cpuid_fam_id": fam, "cpuid_mod_id": model, "cpuid_step": 1}
    tcb = pki.tcb.to_u64()
    base: dict[str, object] = {
        "version": version, "guest_svn": 5, "policy": 0x3_0000, "family_id": b"\x01" * 16,
        "image_id": b"\x02" * 16, "vmpl": 0, "signature_algo": 1, "current_tcb": tcb,
        "platform_info": 1, "key_info": (1 << 2) if vlek else 0,
        "report_data": bytes(range(64)), "measurement": bytes(range(48)),
        "host_data": b"\x07" * 32, "id_key_digest": bytes(48), "author_key_digest": bytes(48),
        "report_id": b"\x08" * 32, "report_id_ma": b"\xff" * 32, "reported_tcb": tcb,
        "chip_id": bytes(64) if vlek else pki.hwid.ljust(64, b"\x00"), "committed_tcb": tcb,
        "current_build": 4, "current_minor": 52, "current_major": 1, "committed_build": 4,
        "committed_minor": 52, "committed_major": 1, "launch_tcb": tcb,
        "launch_mit_vector": None, "current_mit_vector": None,
        "signature_r": bytes(72), "signature_s": bytes(72), **cpuid,
    }  # fmt: skip
    base.update(fields)
    return SnpReport(**base)  # type: ignore[arg-type]


def sign(report: SnpReport, key: ec.EllipticCurvePrivateKey) -> bytes:
    body = report.to_bytes()[:SIGNED_SIZE]
    r, s = decode_dss_signature(key.sign(body, ec.ECDSA(hashes.SHA384())))
    signed = dataclasses.replace(
        report, signature_r=r.to_bytes(72, "little"), signature_s=s.to_bytes(72, "little")
    )
    return signed.to_bytes()


def signed_report(pki: Pki, *, vlek: bool = False, tag: str = "", **fields: object) -> bytes:
    key = ec_key(f"{'vlek' if vlek else 'vcek'}-{pki.product}-{tag}")
    return sign(unsigned_report(pki, vlek=vlek, **fields), key)


def crl_for(
    pki: Pki,
    *,
    revoked: tuple[int, ...] = (),
    this_update: dt.datetime = NOW - dt.timedelta(days=1),
    next_update: dt.datetime = NOW + dt.timedelta(days=30),
    signer: rsa.RSAPrivateKey | None = None,
    issuer: x509.Name | None = None,
) -> bytes:
    """A DER CRL as AMD KDS serves it: issued and signed (RSA-PSS) by the ARK."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer or pki.ark.subject)
        .last_update(this_update)
        .next_update(next_update)
    )
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(T0).build()
        )
    key = signer or rsa_key(f"ark-{pki.product}-")
    crl = builder.sign(key, hashes.SHA384(), rsa_padding=PSS)
    return crl.public_bytes(serialization.Encoding.DER)


# --- the factory's own checks ---------------------------------------------------------------------
def test_factory_vcek_has_serial_zero_and_loads_without_warning() -> None:
    pki = make_pki()
    cert = amd.load_certificate(pki.vcek, role="VCEK")
    assert cert.serial == 0
    assert cert.cert.serial_number == 1  # the parse copy; the true serial is kept apart
    key = amd.parse_endorsement_key(cert)
    assert key.kind == "vcek" and key.hwid == pki.hwid and key.tcb == pki.tcb


def test_factory_report_parses() -> None:
    from sealpod.evidence.snp_report import parse_report

    pki = make_pki()
    report = parse_report(signed_report(pki))
    assert report.chip_id == pki.hwid
    assert report.reported_tcb == pki.tcb.to_u64()
