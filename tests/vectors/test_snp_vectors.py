"""Real SEV-SNP evidence from ../shared/vectors (README section B): S1-S5, B.2, every negative
recipe of section B, the certificates that come without a report, and the pinned ARKs.

No source pins a verification time for SNP; every T below lies inside the VCEK's validity.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from sealpod.errors import (
    CertificateError,
    EvidenceSignatureError,
    IdentityMismatch,
    MalformedEvidence,
    TcbError,
    UntrustedRoot,
    ValidityError,
    VerificationError,
)
from sealpod.evidence.envelope import RawEvidence, load_evidence
from sealpod.evidence.snp_report import SnpProduct, parse_report
from sealpod.policy import Policy, evaluate
from sealpod.verify import amd
from sealpod.verify.claims import TcbStatus, TeeKind, VerifiedClaims
from sealpod.verify.snp import SnpVerifier
from sealpod.verify.trust import (
    AMD_ARK_GENOA_SHA256,
    AMD_ARK_MILAN_SHA256,
    AMD_ARK_TURIN_SHA256,
    DEFAULT_TRUST,
)

pytestmark = pytest.mark.vectors

T = dt.datetime(2025, 7, 1, tzinfo=dt.UTC)  # inside every VCEK/VLEK validity of S1-S5


@dataclass(frozen=True)
class Vector:
    report: bytes
    vcek: bytes
    chain: bytes


def _read(vectors: Path, name: str) -> bytes:
    return (vectors / name).read_bytes()


def load(vectors: Path, sid: str) -> Vector:
    if sid == "S1":
        return Vector(
            _read(vectors, "go-sev-guest/attestation.bin"),
            _read(vectors, "go-sev-guest/vcek.testcer"),
            _read(vectors, "go-sev-guest/ask_ark_milan.pem"),
        )
    if sid == "S2":
        evidence = load_evidence(_read(vectors, "virtee-sev/report_milan.hex"))
        assert isinstance(evidence, RawEvidence) and evidence.encoding == "hex"
        return Vector(
            evidence.raw,
            _read(vectors, "virtee-sev/vcek_milan.der"),
            _read(vectors, "go-sev-guest/ask_ark_milan.pem"),
        )
    if sid == "S3":
        return Vector(
            _read(vectors, "trustee/snp/test-report.bin"),
            _read(vectors, "trustee/snp/test-vcek.der"),
            _read(vectors, "trustee/snp/milan_ask_ark_asvk.pem"),
        )
    if sid == "S4":
        return Vector(
            _read(vectors, "trustee/snp/test-vlek-report.bin"),
            _read(vectors, "trustee/snp/test-vlek.der"),
            _read(vectors, "trustee/snp/milan_ask_ark_asvk.pem"),
        )
    if sid == "S5":
        return Vector(
            _read(vectors, "trustee/snp/derived/e2e_genoa_report.reconstructed.bin"),
            _read(vectors, "trustee/snp/derived/e2e_genoa_vcek.der"),
            _read(vectors, "go-sev-guest/ask_ark_genoa.pem"),
        )
    raise KeyError(sid)


def verify(v: Vector, *, now: dt.datetime = T, **changes: bytes) -> VerifiedClaims:
    fields = {"report": v.report, "vcek": v.vcek, "chain": v.chain, **changes}
    return SnpVerifier(DEFAULT_TRUST).verify(
        fields["report"], vcek=fields["vcek"], chain=fields["chain"], now=now
    )


def flip(data: bytes, offset: int, *, xor: int | None = None, add: int | None = None) -> bytes:
    out = bytearray(data)
    out[offset] = out[offset] ^ xor if xor is not None else (out[offset] + (add or 0)) & 0xFF
    return bytes(out)


# --- trust anchors ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pem", "fingerprint", "product"),
    [
        ("go-sev-guest/ask_ark_milan.pem", AMD_ARK_MILAN_SHA256, SnpProduct.MILAN),
        ("go-sev-guest/ask_ark_genoa.pem", AMD_ARK_GENOA_SHA256, SnpProduct.GENOA),
        ("go-sev-guest/ask_ark_turin_vcek.pem", AMD_ARK_TURIN_SHA256, SnpProduct.TURIN),
    ],
)
def test_pinned_ark_fingerprints_match_amd_arks(
    vectors: Path, pem: str, fingerprint: bytes, product: SnpProduct
) -> None:
    certs = amd.load_chain(_read(vectors, pem))
    ark = next(c for c in certs if c.self_issued)
    assert hashlib.sha256(ark.der).digest() == fingerprint
    assert amd.ARK_PRODUCTS[fingerprint] is product
    assert ark.common_name == f"ARK-{product.value}"


# --- S1 -----------------------------------------------------------------------------------------
def test_s1_go_sev_guest_milan(vectors: Path) -> None:
    v = load(vectors, "S1")
    claims = verify(v)
    report = parse_report(v.report)
    assert claims.tee is TeeKind.SNP and claims.tcb_status is TcbStatus.UP_TO_DATE
    assert report.policy == 0xB0000 and claims.debug is True and report.guest_policy.smt
    assert report.vmpl == 0 and report.platform_info == 1
    for which in ("current", "reported", "committed", "launch"):
        assert getattr(report, f"{which}_tcb") == 0x4405000000000002 == 4901323769462652930
    tcb = report.tcb("reported")
    assert (tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode) == (2, 0, 5, 68)
    assert (report.current_major, report.current_minor, report.current_build) == (1, 49, 3)
    assert claims.report_data == bytes.fromhex("0102030405").ljust(64, b"\x00")
    assert claims.measurement.hex() == (
        "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01"
    )
    assert not any(report.host_data + report.family_id + report.image_id)
    assert report.report_id.hex() == (
        "8edc638e1857c555d21f6b11bda3c8b1b5a09dba4852b4c8ee7aa2f16f22cc0a"
    )
    assert report.report_id_ma == b"\xff" * 32
    assert report.chip_id.hex().startswith("3ac3fe21e13fb099")
    assert report.chip_id.hex().endswith("006b5d")
    assert not any(report.id_key_digest)  # no ID block


def test_s1_bad_values_of_go_sev_guest_check_test_fail_policy(vectors: Path) -> None:
    claims = verify(load(vectors, "S1"))
    policy = Policy.from_toml(
        """
        allow_debug = true
        [snp]
        vmpl = 1
        require_id_key = true
        min_firmware = "1.50"
        min_tcb = { bootloader = 3, tee = 0, snp = 5, microcode = 68 }  # 0x4405000000000003
        """
    )
    codes = sorted({v.code for v in evaluate(policy, claims)})
    assert codes == [
        "snp_firmware_too_low",
        "snp_id_key_required",
        "snp_tcb_too_low",
        "snp_vmpl_mismatch",
    ]
    # The default policy refuses it too: the guest policy allows debugging.
    assert [v.code for v in evaluate(Policy(), claims)] == ["debug_not_allowed"]
    # The go-sev-guest "good" values pass.
    good = Policy.from_toml(
        'allow_debug = true\n[snp]\nvmpl = 0\nmin_firmware = "1.49"\n'
        "min_tcb = { bootloader = 2, tee = 0, snp = 5, microcode = 68 }\n"
    )
    assert evaluate(good, claims) == []


# --- S2 -----------------------------------------------------------------------------------------
def test_s2_virtee_milan(vectors: Path) -> None:
    v = load(vectors, "S2")
    claims = verify(v)
    report = parse_report(v.report)
    tcb = report.tcb("reported")
    assert (tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode) == (3, 0, 8, 115)
    assert report.firmware_version == "1.52.4" and report.policy == 0x30000
    assert claims.debug is False


def test_s2_negative_report_byte_21_fails_signature(vectors: Path) -> None:
    v = load(vectors, "S2")
    with pytest.raises(EvidenceSignatureError):
        verify(v, report=flip(v.report, 21, xor=0x80))


def test_s2_negative_vcek_byte_40_fails_chain(vectors: Path) -> None:
    v = load(vectors, "S2")
    with pytest.raises(CertificateError):
        verify(v, vcek=flip(v.vcek, 40, xor=0xFF))


# --- S3 -----------------------------------------------------------------------------------------
def test_s3_trustee_milan_reported_tcb_differs_from_current(vectors: Path) -> None:
    v = load(vectors, "S3")
    claims = verify(v)
    report = parse_report(v.report)
    assert report.tcb("current").microcode == 206
    assert report.tcb("reported").microcode == 115
    assert claims.snp is not None and claims.snp.reported_tcb == report.reported_tcb


def test_s3_negative_byte_42_fails_signature(vectors: Path) -> None:
    v = load(vectors, "S3")
    with pytest.raises(EvidenceSignatureError):
        verify(v, report=flip(v.report, 42, add=1))


def test_s3_negative_reported_tcb_byte_384_fails_tcb_check(vectors: Path) -> None:
    v = load(vectors, "S3")
    with pytest.raises(TcbError):
        verify(v, report=flip(v.report, 384, add=1))


def test_s3_negative_vcek_byte_42_fails_chain(vectors: Path) -> None:
    v = load(vectors, "S3")
    with pytest.raises(CertificateError):
        verify(v, vcek=flip(v.vcek, 42, add=1))


def test_s3_negative_asvk_used_as_ask_fails(vectors: Path) -> None:
    v = load(vectors, "S3")
    chain = amd.load_chain(v.chain)
    asvk_and_ark = b"".join(
        _pem(c.der) for c in chain if c.common_name in ("SEV-VLEK-Milan", "ARK-Milan")
    )
    with pytest.raises(CertificateError):
        verify(v, chain=asvk_and_ark)


# --- S4 -----------------------------------------------------------------------------------------
def test_s4_aws_vlek_milan(vectors: Path) -> None:
    v = load(vectors, "S4")
    claims = verify(v)
    report = parse_report(v.report)
    assert report.version == 3 and report.vmpl == 1 and report.signing_key.name == "VLEK"
    assert not any(report.chip_id)
    tcb = report.tcb("reported")
    assert (tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode) == (4, 0, 24, 217)
    assert claims.snp is not None and claims.snp.signing_key == "vlek"
    assert claims.platform["csp_id"] == "CN=cc-us-east-2.amazonaws.com"


def test_s4_vlek_expires_after_one_year(vectors: Path) -> None:
    with pytest.raises(ValidityError, match="expired"):
        verify(load(vectors, "S4"), now=dt.datetime(2025, 12, 11, tzinfo=dt.UTC))


# --- S5 -----------------------------------------------------------------------------------------
def test_s5_trustee_genoa(vectors: Path) -> None:
    v = load(vectors, "S5")
    claims = verify(v)
    report = parse_report(v.report)
    assert report.product is SnpProduct.GENOA
    assert (report.cpuid_fam_id, report.cpuid_mod_id, report.cpuid_step) == (0x19, 0xA0, 2)
    assert claims.measurement.hex().startswith("6a6519d7")
    assert claims.measurement.hex().endswith("06e73e")
    tcb = report.tcb("reported")
    assert (tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode) == (10, 0, 23, 25)
    assert report.firmware_version == "1.55.40" and report.platform_info == 0x25
    assert claims.snp is not None and claims.snp.product == "Genoa"


def test_s5_with_the_milan_chain_is_refused(vectors: Path) -> None:
    v = load(vectors, "S5")
    with pytest.raises(CertificateError):
        verify(v, chain=load(vectors, "S1").chain)


# --- B.2 ----------------------------------------------------------------------------------------
def test_b2_report_with_the_vcek_of_another_chip_is_refused(vectors: Path) -> None:
    s1, s2 = load(vectors, "S1"), load(vectors, "S2")
    with pytest.raises((IdentityMismatch, TcbError, EvidenceSignatureError)):
        verify(s1, vcek=s2.vcek)


def test_b2_s1_report_fails_the_signature_check_with_the_s2_vcek(vectors: Path) -> None:
    s1, s2 = load(vectors, "S1"), load(vectors, "S2")
    key = amd.parse_endorsement_key(amd.load_certificate(s2.vcek, role="VCEK"))
    report = parse_report(s1.report)
    assert key.hwid != report.chip_id  # the hwID does not equal the report chip_id
    from sealpod.verify.snp import _check_signature  # the signature check on its own

    with pytest.raises(EvidenceSignatureError):
        _check_signature(s1.report, report, key)


# --- certificates without a report ----------------------------------------------------------------
def test_turin_vcek_chains_to_ark_turin(vectors: Path) -> None:
    vcek = amd.load_certificate(_read(vectors, "virtee-sev/vcek_turin.der"), role="VCEK")
    ask, ark = amd.load_chain(_read(vectors, "go-sev-guest/ask_ark_turin_vcek.pem"))
    amd.check_signed_by(ark, ark, step="ARK")
    amd.check_signed_by(ask, ark, step="ASK")
    amd.check_signed_by(vcek, ask, step="VCEK")
    key = amd.parse_endorsement_key(vcek)
    assert key.product is SnpProduct.TURIN and key.product_name == "Turin"
    assert key.hwid is not None and len(key.hwid) == 8
    assert key.tcb.fmc == 0 and key.struct_version == 1
    assert ark.fingerprint == AMD_ARK_TURIN_SHA256


@pytest.mark.parametrize("name", ["test-vcek-invalid-legacy.der", "test-vcek-invalid-new.der"])
def test_synthetic_vceks_parse_with_hwid_00_to_3f(vectors: Path, name: str) -> None:
    cert = amd.load_certificate(_read(vectors, f"trustee/snp/{name}"), role="VCEK")
    assert cert.serial == 0
    key = amd.parse_endorsement_key(cert)
    assert key.kind == "vcek" and key.hwid == bytes(range(64))


@pytest.mark.parametrize("name", ["test-vcek-invalid-legacy.der", "test-vcek-invalid-new.der"])
def test_synthetic_vceks_do_not_chain_to_amd(vectors: Path, name: str) -> None:
    vcek = amd.load_certificate(_read(vectors, f"trustee/snp/{name}"), role="VCEK")
    ask, _ = amd.load_chain(_read(vectors, "go-sev-guest/ask_ark_milan.pem"))
    with pytest.raises(CertificateError):
        amd.check_signed_by(vcek, ask, step="VCEK")


def test_every_real_vcek_loads_under_filterwarnings_error(vectors: Path) -> None:
    # pytest runs with filterwarnings = error: a CryptographyDeprecationWarning would fail here.
    for name in (
        "go-sev-guest/vcek.testcer",
        "trustee/snp/test-vcek.der",
        "trustee/snp/test-vlek.der",
        "virtee-sev/vcek_milan.der",
        "virtee-sev/vcek_turin.der",
        "trustee/snp/derived/e2e_genoa_vcek.der",
    ):
        cert = amd.load_certificate(_read(vectors, name), role="VCEK")
        assert cert.serial == 0 and cert.tbs in cert.der


def test_untrusted_root_when_no_amd_ark_is_pinned(vectors: Path) -> None:
    from sealpod.verify.trust import TrustAnchors

    v = load(vectors, "S1")
    with pytest.raises(UntrustedRoot):
        SnpVerifier(TrustAnchors(intel_roots=frozenset(), amd_arks=frozenset())).verify(
            v.report, vcek=v.vcek, chain=v.chain, now=T
        )


@pytest.mark.slow
@pytest.mark.parametrize("sid", ["S1", "S4", "S5"])
def test_every_byte_flip_of_a_real_report_is_refused(vectors: Path, sid: str) -> None:
    """No single flipped byte of a real report verifies: each is a typed error."""
    v = load(vectors, sid)
    verifier = SnpVerifier(DEFAULT_TRUST)
    for offset in range(len(v.report)):
        with pytest.raises((MalformedEvidence, VerificationError)):
            verifier.verify(flip(v.report, offset, xor=0x01), vcek=v.vcek, chain=v.chain, now=T)


def _pem(der: bytes) -> bytes:
    import base64

    return (
        b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der) + b"-----END CERTIFICATE-----\n"
    )
