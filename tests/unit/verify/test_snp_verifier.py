"""SnpVerifier on a synthetic AMD-profile PKI: the accepted cases and one named test per refusal."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from test_snp_factory import (
    NOW,
    T0,
    Pki,
    ca_cert,
    crl_for,
    ec_key,
    leaf_der,
    make_pki,
    pem,
    rsa_key,
    sign,
    signed_report,
    unsigned_report,
)

from sealpod.errors import (
    CertificateError,
    EvidenceSignatureError,
    IdentityMismatch,
    MalformedEvidence,
    RevokedError,
    TcbError,
    UntrustedRoot,
    ValidityError,
)
from sealpod.evidence.snp_report import SnpProduct, TcbVersion
from sealpod.verify import amd
from sealpod.verify.claims import TcbStatus, TeeKind
from sealpod.verify.snp import SnpVerifier
from sealpod.verify.trust import DEFAULT_TRUST, TrustAnchors


def trust_for(pki: Pki, *, sim: bool = False) -> TrustAnchors:
    fp = frozenset({pki.ark_fingerprint})
    if sim:
        return TrustAnchors(intel_roots=frozenset(), amd_arks=frozenset(), sim_roots=fp)
    return TrustAnchors(intel_roots=frozenset(), amd_arks=fp)


def verify(
    pki: Pki,
    raw: bytes,
    *,
    vlek: bool = False,
    vcek: bytes | None = None,
    chain: bytes | None = None,
    crl: bytes | None = None,
    now: dt.datetime = NOW,
    trust: TrustAnchors | None = None,
) -> object:
    v = SnpVerifier(trust or trust_for(pki))
    return v.verify(
        raw,
        vcek=vcek if vcek is not None else (pki.vlek if vlek else pki.vcek),
        chain=chain if chain is not None else (pki.vlek_chain if vlek else pki.chain),
        crl=crl,
        now=now,
    )


# --- accepted -------------------------------------------------------------------------------------
def test_milan_vcek_report_verifies_with_claims() -> None:
    pki = make_pki()
    claims = SnpVerifier(trust_for(pki)).verify(
        signed_report(pki), vcek=pki.vcek, chain=pki.chain, now=NOW
    )
    assert claims.tee is TeeKind.SNP and claims.emulated is None and not claims.simulated
    assert claims.measurement == bytes(range(48))
    assert claims.report_data == bytes(range(64))
    assert claims.debug is False
    assert claims.tcb_status is TcbStatus.UP_TO_DATE
    assert claims.svn == 5 and claims.signer is None and claims.product_id is None
    assert claims.snp is not None
    assert claims.snp.product == "Milan" and claims.snp.signing_key == "vcek"
    assert claims.snp.host_data == b"\x07" * 32 and claims.snp.vmpl == 0
    assert claims.snp.reported_tcb == pki.tcb.to_u64()
    assert claims.platform["firmware"] == "1.52.4"
    firmware = (claims.snp.firmware_major, claims.snp.firmware_minor, claims.snp.firmware_build)
    assert firmware == (1, 52, 4)  # typed, for policy; the same facts as the display entries
    assert claims.snp.report_version == claims.platform["report_version"]
    assert claims.to_json()["snp"]["firmware_minor"] == 52  # type: ignore[index]
    assert claims.platform["reported_tcb"] == "bootloader 3, tee 0, snp 8, microcode 115"
    assert claims.to_json()["snp"]["chip_id"] == pki.hwid.hex()  # type: ignore[index]


def test_debug_claim_comes_from_guest_policy_bit_19() -> None:
    pki = make_pki()
    claims = SnpVerifier(trust_for(pki)).verify(
        signed_report(pki, policy=0x3_0000 | 1 << 19), vcek=pki.vcek, chain=pki.chain, now=NOW
    )
    assert claims.debug is True


def test_vlek_report_verifies_through_asvk() -> None:
    pki = make_pki()
    claims = verify(pki, signed_report(pki, vlek=True), vlek=True)
    assert claims.snp.signing_key == "vlek"  # type: ignore[attr-defined]
    assert claims.platform["csp_id"] == "CN=cloud.example"  # type: ignore[attr-defined]


def test_turin_report_with_8_byte_hwid_and_fmc() -> None:
    pki = make_pki(SnpProduct.TURIN)
    claims = verify(pki, signed_report(pki))
    assert claims.snp.product == "Turin"  # type: ignore[attr-defined]
    assert claims.platform["reported_tcb"].startswith("fmc 1,")  # type: ignore[attr-defined]


def test_chain_order_does_not_matter_and_extra_certs_are_ignored() -> None:
    pki = make_pki()
    chain = pem(pki.ark, pki.asvk, pki.ask)
    claims = verify(pki, signed_report(pki), chain=chain)
    assert claims.tee is TeeKind.SNP  # type: ignore[attr-defined]


def test_simulated_root_yields_sim_claims() -> None:
    pki = make_pki()
    claims = verify(pki, signed_report(pki), trust=trust_for(pki, sim=True))
    assert claims.tee is TeeKind.SIM  # type: ignore[attr-defined]
    assert claims.emulated is TeeKind.SNP  # type: ignore[attr-defined]
    assert claims.simulated  # type: ignore[attr-defined]


def test_naive_now_is_utc() -> None:
    pki = make_pki()
    claims = verify(pki, signed_report(pki), now=NOW.replace(tzinfo=None))
    assert claims.tee is TeeKind.SNP  # type: ignore[attr-defined]


def test_mask_chip_key_with_zero_chip_id_is_accepted() -> None:
    pki = make_pki()
    claims = verify(pki, signed_report(pki, key_info=0b10, chip_id=bytes(64)))
    assert claims.snp.chip_id == bytes(64)  # type: ignore[attr-defined]


def test_hwid_wrapped_in_octet_string_is_accepted() -> None:
    pki = make_pki()
    vcek = leaf_der(
        issuer=pki.ask, issuer_key=rsa_key("ask-Milan-"), key=ec_key("vcek-Milan-"),
        product_name="Milan-B0", tcb=pki.tcb, hwid=pki.hwid, hwid_wrapped=True,
    )  # fmt: skip
    claims = verify(pki, signed_report(pki), vcek=vcek)
    assert claims.tee is TeeKind.SNP  # type: ignore[attr-defined]


def test_crl_that_revokes_nothing_is_accepted() -> None:
    pki = make_pki()
    claims = verify(pki, signed_report(pki), crl=crl_for(pki, revoked=(0x5,)))
    assert claims.tee is TeeKind.SNP  # type: ignore[attr-defined]


# --- refusals -----------------------------------------------------------------------------------
def test_refuses_malformed_report() -> None:
    pki = make_pki()
    with pytest.raises(MalformedEvidence):
        verify(pki, signed_report(pki)[:-1])


def test_refuses_unpinned_ark() -> None:
    pki = make_pki()
    with pytest.raises(UntrustedRoot) as info:
        verify(pki, signed_report(pki), trust=DEFAULT_TRUST)
    assert info.value.actual == pki.ark_fingerprint.hex()
    assert info.value.step and info.value.step.startswith("Step 3")


def test_refuses_chain_without_ark() -> None:
    pki = make_pki()
    with pytest.raises(CertificateError, match="no self-signed ARK"):
        verify(pki, signed_report(pki), chain=pem(pki.ask))


def test_refuses_ask_signed_by_another_ark_with_the_same_name() -> None:
    pki = make_pki()
    impostor = ca_cert(
        "SEV-Milan", rsa_key("ask-Milan-"), issuer=(pki.ark.subject, rsa_key("evil")), serial=2
    )
    with pytest.raises(CertificateError, match="does not verify") as info:
        verify(pki, signed_report(pki), chain=pem(impostor, pki.ark))
    assert info.value.step == "Step 5: ASK/ASVK signed by the ARK"


def test_refuses_vcek_signed_by_another_key() -> None:
    pki = make_pki()
    forged = leaf_der(
        issuer=pki.ask, issuer_key=rsa_key("evil"), key=ec_key("vcek-Milan-"),
        product_name="Milan-B0", tcb=pki.tcb, hwid=pki.hwid,
    )  # fmt: skip
    with pytest.raises(CertificateError) as info:
        verify(pki, signed_report(pki), vcek=forged)
    assert info.value.step == "Step 6: VCEK/VLEK signed by the ASK/ASVK"


def test_refuses_asvk_used_as_ask() -> None:
    pki = make_pki()
    with pytest.raises(CertificateError, match="no certificate in the chain issued the VCEK"):
        verify(pki, signed_report(pki), chain=pki.vlek_chain)


def test_refuses_intermediate_that_is_not_a_ca() -> None:
    pki = make_pki()
    ark_key = rsa_key("ark-Milan-")
    not_ca = ca_cert(
        "SEV-Milan", rsa_key("ask-Milan-"), issuer=(pki.ark.subject, ark_key), ca=False
    )
    with pytest.raises(CertificateError, match="not a CA"):
        verify(pki, signed_report(pki), chain=pem(not_ca, pki.ark))


def test_refuses_product_mismatch_between_vcek_and_chain() -> None:
    pki = make_pki()
    genoa_vcek = leaf_der(
        issuer=pki.ask, issuer_key=rsa_key("ask-Milan-"), key=ec_key("vcek-Milan-"),
        product_name="Genoa", tcb=pki.tcb, hwid=pki.hwid,
    )  # fmt: skip
    with pytest.raises(CertificateError, match="is for Milan, the VCEK for Genoa"):
        verify(pki, signed_report(pki), vcek=genoa_vcek)


def test_refuses_vcek_signed_with_another_pss_salt_length() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    pki = make_pki()
    salt32 = leaf_der(
        issuer=pki.ask, issuer_key=rsa_key("ask-Milan-"), key=ec_key("vcek-Milan-"),
        product_name="Milan-B0", tcb=pki.tcb, hwid=pki.hwid,
        pss=padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=32),
    )  # fmt: skip
    with pytest.raises(CertificateError, match="48-byte salt") as info:
        verify(pki, signed_report(pki), vcek=salt32)
    assert info.value.actual == "rsassa_pss sha384/sha384/32"


def test_refuses_outer_signature_algorithm_that_differs_from_the_signed_one() -> None:
    pki = make_pki()
    der = bytearray(pki.vcek)
    # The outer AlgorithmIdentifier follows the TBS; its salt INTEGER is the last "a2 03 02 01 30".
    at = bytes(der).rindex(bytes.fromhex("a203020130"))
    der[at + 4] = 0x20
    with pytest.raises(CertificateError, match="signatureAlgorithm differs"):
        amd.load_certificate(bytes(der), role="VCEK")


def test_refuses_vcek_with_a_p256_key() -> None:
    pki = make_pki()
    weak = leaf_der(
        issuer=pki.ask, issuer_key=rsa_key("ask-Milan-"), key=ec_key("p256", "p256"),
        product_name="Milan-B0", tcb=pki.tcb, hwid=pki.hwid,
    )  # fmt: skip
    with pytest.raises(CertificateError, match="expected ECDSA P-384"):
        verify(pki, signed_report(pki), vcek=weak)


def test_refuses_vcek_without_tcb_extension() -> None:
    pki = make_pki()
    partial = leaf_der(
        issuer=pki.ask, issuer_key=rsa_key("ask-Milan-"), key=ec_key("vcek-Milan-"),
        product_name="Milan-B0", tcb=pki.tcb, hwid=pki.hwid, drop=(amd.OID_SNP_SPL,),
    )  # fmt: skip
    with pytest.raises(CertificateError, match="snpSPL"):
        verify(pki, signed_report(pki), vcek=partial)


@pytest.mark.parametrize(
    ("product", "oid", "name"),
    [
        (SnpProduct.MILAN, amd.OID_BL_SPL, "blSPL"),
        (SnpProduct.MILAN, amd.OID_TEE_SPL, "teeSPL"),
        (SnpProduct.MILAN, amd.OID_UCODE_SPL, "ucodeSPL"),
        (SnpProduct.TURIN, amd.OID_FMC_SPL, "fmcSPL"),  # required on Turin only
    ],
)
def test_refuses_vcek_without_each_required_tcb_extension(
    product: SnpProduct, oid: str, name: str
) -> None:
    pki = make_pki(product)
    partial = leaf_der(
        issuer=pki.ask, issuer_key=rsa_key(f"ask-{product}-"), key=ec_key(f"vcek-{product}-"),
        product_name="Milan-B0" if product is SnpProduct.MILAN else product.value,
        tcb=pki.tcb, hwid=pki.hwid, drop=(oid,),
    )  # fmt: skip
    with pytest.raises(CertificateError, match=f"lacks the {name} extension"):
        verify(pki, signed_report(pki), vcek=partial)


def test_refuses_expired_vcek() -> None:
    pki = make_pki()
    with pytest.raises(ValidityError, match="expired") as info:
        verify(pki, signed_report(pki), now=T0 + dt.timedelta(days=8 * 365))
    assert info.value.step == "Step 7: certificate validity"


def test_refuses_vcek_not_yet_valid() -> None:
    pki = make_pki()
    with pytest.raises(ValidityError, match="not yet valid"):
        verify(pki, signed_report(pki), now=T0 - dt.timedelta(seconds=1))


def test_validity_is_checked_on_every_call_even_with_a_cached_chain() -> None:
    pki = make_pki()
    v = SnpVerifier(trust_for(pki))
    raw = signed_report(pki)
    v.verify(raw, vcek=pki.vcek, chain=pki.chain, now=NOW)
    with pytest.raises(ValidityError):
        v.verify(raw, vcek=pki.vcek, chain=pki.chain, now=T0 + dt.timedelta(days=8 * 365))


def test_failed_chain_is_not_cached() -> None:
    pki = make_pki()
    v = SnpVerifier(trust_for(pki))
    raw = signed_report(pki)
    for _ in range(2):
        with pytest.raises(CertificateError):
            v.verify(raw, vcek=pki.vcek, chain=pki.vlek_chain, now=NOW)


def test_refuses_revoked_ask() -> None:
    pki = make_pki()
    with pytest.raises(RevokedError, match="revoked"):
        verify(pki, signed_report(pki), crl=crl_for(pki, revoked=(pki.ask.serial_number,)))


def test_refuses_crl_not_signed_by_the_ark() -> None:
    pki = make_pki()
    with pytest.raises(CertificateError, match="CRL signature"):
        verify(pki, signed_report(pki), crl=crl_for(pki, signer=rsa_key("evil")))


def test_refuses_crl_of_another_issuer() -> None:
    pki = make_pki()
    with pytest.raises(CertificateError, match="CRL issuer"):
        verify(pki, signed_report(pki), crl=crl_for(pki, issuer=pki.ask.subject))


def test_refuses_expired_crl_and_crl_at_exactly_next_update() -> None:
    pki = make_pki()
    crl = crl_for(pki, next_update=NOW)
    with pytest.raises(ValidityError, match="CRL expired"):
        verify(pki, signed_report(pki), crl=crl)


def test_refuses_crl_not_yet_valid() -> None:
    pki = make_pki()
    crl = crl_for(pki, this_update=NOW + dt.timedelta(hours=1))
    with pytest.raises(ValidityError, match="CRL is not yet valid"):
        verify(pki, signed_report(pki), crl=crl)


def test_refuses_garbage_crl() -> None:
    pki = make_pki()
    with pytest.raises(CertificateError, match="not a DER or PEM"):
        verify(pki, signed_report(pki), crl=b"\x30\x03garbage")


def test_refuses_report_naming_vlek_with_a_vcek() -> None:
    pki = make_pki()
    raw = signed_report(pki, key_info=1 << 2)
    with pytest.raises(IdentityMismatch, match="signed by the VLEK") as info:
        verify(pki, raw)
    assert info.value.step == "Step 9: signing key kind"


def test_refuses_unsigned_report() -> None:
    pki = make_pki()
    with pytest.raises(EvidenceSignatureError, match="not signed"):
        verify(pki, signed_report(pki, key_info=7 << 2))


def test_refuses_chip_id_of_another_chip() -> None:
    pki = make_pki()
    with pytest.raises(IdentityMismatch, match="another chip") as info:
        verify(pki, signed_report(pki, chip_id=b"\x01" * 64))
    assert info.value.expected == pki.hwid.hex()


def test_refuses_masked_chip_id_that_is_not_zero() -> None:
    pki = make_pki()
    with pytest.raises(IdentityMismatch, match="MASK_CHIP_KEY"):
        verify(pki, signed_report(pki, key_info=0b10))


def test_refuses_turin_chip_id_with_non_zero_tail() -> None:
    pki = make_pki(SnpProduct.TURIN)
    with pytest.raises(IdentityMismatch):
        verify(pki, signed_report(pki, chip_id=pki.hwid + b"\x01" * 56))


def test_refuses_cpuid_of_another_product() -> None:
    pki = make_pki()
    raw = signed_report(pki, version=3, cpuid_fam_id=0x19, cpuid_mod_id=0x11, cpuid_step=1)
    with pytest.raises(IdentityMismatch, match="Genoa processor") as info:
        verify(pki, raw)
    assert info.value.step == "Step 11: CPUID product"


def test_refuses_turin_family_with_a_milan_certificate() -> None:
    pki = make_pki()
    raw = signed_report(pki, version=3, cpuid_fam_id=0x1A, cpuid_mod_id=0x40, cpuid_step=0)
    with pytest.raises(IdentityMismatch, match="family 0x1a"):
        verify(pki, raw)


def test_refuses_reported_tcb_that_differs_from_the_vcek() -> None:
    pki = make_pki()
    lower = TcbVersion(bootloader=3, tee=0, snp=7, microcode=115).to_u64()
    with pytest.raises(TcbError, match="REPORTED_TCB") as info:
        verify(pki, signed_report(pki, reported_tcb=lower))
    assert info.value.expected == "bootloader 3, tee 0, snp 8, microcode 115"
    assert info.value.actual == "bootloader 3, tee 0, snp 7, microcode 115"


def test_refuses_tampered_report() -> None:
    pki = make_pki()
    raw = bytearray(signed_report(pki))
    raw[0x50] ^= 1  # report_data
    with pytest.raises(EvidenceSignatureError) as info:
        verify(pki, bytes(raw))
    assert info.value.step == "Step 13: report signature"


def test_refuses_signature_by_another_key() -> None:
    pki = make_pki()
    raw = sign(unsigned_report(pki), ec_key("evil"))
    with pytest.raises(EvidenceSignatureError, match="does not verify"):
        verify(pki, raw)


def test_refuses_zero_signature() -> None:
    pki = make_pki()
    raw = unsigned_report(pki).to_bytes()
    with pytest.raises(EvidenceSignatureError, match="out of range"):
        verify(pki, raw)


def test_refuses_signature_with_s_above_the_order() -> None:
    pki = make_pki()
    good = unsigned_report(pki)
    raw = sign(good, ec_key("vcek-Milan-"))
    from sealpod.evidence.snp_report import parse_report

    parsed = parse_report(raw)
    _, s = parsed.signature_rs
    order = int(
        "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973",
        16,
    )
    bad = dataclasses.replace(parsed, signature_s=(s + order).to_bytes(72, "little")).to_bytes()
    with pytest.raises(EvidenceSignatureError):
        verify(pki, bad)
