"""DcapVerifier on synthetic evidence: claims, and one named test per refusal."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sealpod.collateral.models import QuoteCollateral
from sealpod.errors import (
    CertificateError,
    CollateralUnavailable,
    ConfigError,
    EvidenceSignatureError,
    IdentityMismatch,
    MalformedCollateral,
    MalformedEvidence,
    NoMatchingTcbLevel,
    RevokedError,
    TcbError,
    UntrustedRoot,
    ValidityError,
)
from sealpod.evidence.dcap_quote import QuoteHeader
from sealpod.testing.dcap_builders import (
    DcapPki,
    PckFacts,
    build_crl,
    new_key,
    qe_identity_document,
    qe_report_for,
    raw_point,
    sgx_body,
    sign_json,
    sign_rs,
    tcb_info_document,
    td_body,
)
from sealpod.verify.claims import TcbStatus, TeeKind
from sealpod.verify.dcap import DcapVerifier
from sealpod.verify.trust import TrustAnchors

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
ISSUE = NOW - timedelta(hours=1)
NEXT = NOW + timedelta(days=30)


@pytest.fixture(scope="module")
def pki() -> DcapPki:
    return DcapPki.create(now=NOW)


def verify(pki: DcapPki, raw: bytes, collateral: QuoteCollateral, **kw: Any) -> Any:
    return DcapVerifier(pki.trust(), **kw).verify(raw, collateral, now=kw.pop("now", NOW))


def _ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def level(
    sgx: list[int],
    pcesvn: int,
    status: str,
    tdx: list[int] | None = None,
    advisories: list[str] | None = None,
) -> dict[str, Any]:
    tcb: dict[str, Any] = {"sgxtcbcomponents": [{"svn": s} for s in sgx], "pcesvn": pcesvn}
    if tdx is not None:
        tcb["tdxtcbcomponents"] = [{"svn": s} for s in tdx]
    out: dict[str, Any] = {"tcb": tcb, "tcbDate": _ts(ISSUE), "tcbStatus": status}
    if advisories is not None:
        out["advisoryIDs"] = advisories
    return out


def tcb_doc(pki: DcapPki, tee: str = "sgx", **kw: Any) -> dict[str, Any]:
    return tcb_info_document(
        tee=tee, issue=ISSUE, next_update=NEXT, fmspc=pki.facts.fmspc, pce_id=pki.facts.pce_id, **kw
    )


def qe_doc(tee: str = "sgx", **kw: Any) -> dict[str, Any]:
    return qe_identity_document(tee=tee, issue=ISSUE, next_update=NEXT, **kw)


# --- what verification proves -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tee", "version"), [("sgx", 3), ("sgx", 4), ("sgx", 5), ("tdx", 4), ("tdx", 5)]
)
def test_verifies_every_layout(pki: DcapPki, tee: str, version: int) -> None:
    quote = pki.quote(tee=tee, version=version, report_data=b"\x42" * 64)
    claims = verify(pki, quote.to_bytes(), pki.collateral(tee=tee))
    assert claims.tee is TeeKind.SIM
    assert claims.emulated is TeeKind(tee)
    assert claims.tcb_status is TcbStatus.UP_TO_DATE
    assert claims.report_data == b"\x42" * 64
    assert claims.platform["fmspc"] == pki.facts.fmspc.hex()
    assert claims.platform["quote_version"] == version
    assert claims.platform["qe_tcb_status"] == "UpToDate"
    assert claims.platform["ca"] == "platform"


def test_sgx_claims(pki: DcapPki) -> None:
    body = sgx_body(isv_prod_id=7, isv_svn=3, report_data=b"r" * 64)
    claims = verify(pki, pki.quote(body=body).to_bytes(), pki.collateral())
    assert claims.measurement == body.mr_enclave
    assert claims.signer == body.mr_signer
    assert (claims.product_id, claims.svn, claims.debug) == (7, 3, False)
    assert claims.tdx is None


def test_tdx_claims(pki: DcapPki) -> None:
    body = td_body(rt_mr2=b"\x02" * 48)
    claims = verify(pki, pki.quote(tee="tdx", body=body).to_bytes(), pki.collateral(tee="tdx"))
    assert claims.measurement == body.mr_td
    assert claims.signer is None and claims.product_id is None
    assert claims.tdx is not None
    assert claims.tdx.rtmrs[2] == b"\x02" * 48
    assert claims.tdx.td_attributes == body.td_attributes


def test_debug_is_reported_not_refused(pki: DcapPki) -> None:
    sgx = sgx_body(attributes=bytes.fromhex("07000000000000000700000000000000"))
    assert verify(pki, pki.quote(body=sgx).to_bytes(), pki.collateral()).debug
    td = td_body(td_attributes=bytes.fromhex("0100001000000000"))
    claims = verify(pki, pki.quote(tee="tdx", body=td).to_bytes(), pki.collateral(tee="tdx"))
    assert claims.debug


def test_vendor_root_gives_hardware_kind(pki: DcapPki) -> None:
    trust = TrustAnchors(intel_roots=frozenset({pki.root_fingerprint()}), amd_arks=frozenset())
    claims = DcapVerifier(trust).verify(pki.quote().to_bytes(), pki.collateral(), now=NOW)
    assert claims.tee is TeeKind.SGX
    assert claims.emulated is None
    assert not claims.simulated


def test_padding_after_quote_is_fine(pki: DcapPki) -> None:
    raw = pki.quote(tee="tdx").to_bytes() + bytes(70)
    assert verify(pki, raw, pki.collateral(tee="tdx")).tcb_status is TcbStatus.UP_TO_DATE


# --- Step 0 -------------------------------------------------------------------------------------
def test_naive_time_is_refused(pki: DcapPki) -> None:
    with pytest.raises(ConfigError, match="timezone"):
        DcapVerifier(pki.trust()).verify(
            pki.quote().to_bytes(), pki.collateral(), now=NOW.replace(tzinfo=None)
        )


def test_malformed_quote(pki: DcapPki) -> None:
    with pytest.raises(MalformedEvidence):
        verify(pki, b"\x03\x00", pki.collateral())


def test_foreign_qe_vendor_is_refused(pki: DcapPki) -> None:
    quote = pki.quote(header={"qe_vendor_id": b"\x01" * 16})
    with pytest.raises(IdentityMismatch, match="QE vendor") as info:
        verify(pki, quote.to_bytes(), pki.collateral())
    assert info.value.step == "Step 0: quote header"


def test_root_crl_expired(pki: DcapPki) -> None:
    crl = build_crl(issuer=pki.root, issuer_key=pki.root_key, this_update=ISSUE, next_update=NOW)
    collateral = pki.collateral().model_copy(update={"root_ca_crl": crl})
    with pytest.raises(ValidityError, match="root CA CRL is not valid any more") as info:
        verify(pki, pki.quote().to_bytes(), collateral)
    assert info.value.step == "Step 0: root CA CRL"


def test_root_crl_signed_by_another_key(pki: DcapPki) -> None:
    crl = build_crl(issuer=pki.root, issuer_key=new_key(), this_update=ISSUE, next_update=NEXT)
    collateral = pki.collateral().model_copy(update={"root_ca_crl": crl})
    with pytest.raises(CertificateError, match="signature"):
        verify(pki, pki.quote().to_bytes(), collateral)


def test_root_crl_garbage(pki: DcapPki) -> None:
    collateral = pki.collateral().model_copy(update={"root_ca_crl": b"\x30\x03\x02\x01\x00"})
    with pytest.raises(CertificateError, match="does not parse"):
        verify(pki, pki.quote().to_bytes(), collateral)


# --- Step 1 and 2 -------------------------------------------------------------------------------
def test_untrusted_root(pki: DcapPki) -> None:
    stranger = DcapPki.create(now=NOW)
    with pytest.raises(UntrustedRoot, match="not pinned") as info:
        DcapVerifier(stranger.trust()).verify(pki.quote().to_bytes(), pki.collateral(), now=NOW)
    assert info.value.step is not None and info.value.step.startswith("Step 1")


def test_tcb_info_tampered(pki: DcapPki) -> None:
    collateral = pki.collateral()
    tampered = collateral.tcb_info.replace(
        '"tcbEvaluationDataNumber":17', '"tcbEvaluationDataNumber":18'
    )
    assert tampered != collateral.tcb_info
    with pytest.raises(EvidenceSignatureError, match="TCB Info signature") as info:
        verify(pki, pki.quote().to_bytes(), collateral.model_copy(update={"tcb_info": tampered}))
    assert info.value.step == "Step 1: TCB Info signature and signing chain"


def test_tcb_info_whitespace_change_breaks_signature(pki: DcapPki) -> None:
    collateral = pki.collateral()
    spaced = collateral.tcb_info.replace(",", ", ", 1)
    with pytest.raises(EvidenceSignatureError):
        verify(pki, pki.quote().to_bytes(), collateral.model_copy(update={"tcb_info": spaced}))


def test_tcb_info_not_yet_valid(pki: DcapPki) -> None:
    collateral = pki.collateral(window=(NOW + timedelta(seconds=1), NEXT))
    with pytest.raises(ValidityError, match="not yet valid"):
        verify(pki, pki.quote().to_bytes(), collateral)


def test_tcb_info_expired_at_next_update(pki: DcapPki) -> None:
    doc = tcb_doc(pki)
    doc["nextUpdate"] = _ts(NOW)
    with pytest.raises(ValidityError, match="TCB Info has expired"):
        verify(pki, pki.quote().to_bytes(), pki.collateral(tcb_info=doc))


def test_qe_identity_tampered(pki: DcapPki) -> None:
    collateral = pki.collateral()
    tampered = collateral.qe_identity.replace('"isvprodid":1', '"isvprodid":2')
    with pytest.raises(EvidenceSignatureError, match="QE Identity signature") as info:
        verify(pki, pki.quote().to_bytes(), collateral.model_copy(update={"qe_identity": tampered}))
    assert info.value.step == "Step 2: QE Identity signature and signing chain"


def test_qe_identity_expired(pki: DcapPki) -> None:
    doc = qe_doc()
    doc["nextUpdate"] = _ts(NOW - timedelta(seconds=1))
    with pytest.raises(ValidityError, match="QE Identity has expired"):
        verify(pki, pki.quote().to_bytes(), pki.collateral(qe_identity=doc))


def test_qe_identity_for_other_tee(pki: DcapPki) -> None:
    with pytest.raises(IdentityMismatch, match="needs TD_QE"):
        verify(
            pki,
            pki.quote(tee="tdx").to_bytes(),
            pki.collateral(tee="tdx", qe_identity=qe_doc("sgx")),
        )


def test_signed_but_malformed_tcb_info(pki: DcapPki) -> None:
    doc = tcb_doc(pki)
    doc["unexpected"] = 1
    with pytest.raises(MalformedCollateral, match="unexpected"):
        verify(pki, pki.quote().to_bytes(), pki.collateral(tcb_info=doc))


def test_tcb_signer_revoked_by_root_crl(pki: DcapPki) -> None:
    collateral = pki.collateral(root_revoked=[pki.tcb_signer.serial_number])
    with pytest.raises(RevokedError, match="TCB Signing"):
        verify(pki, pki.quote().to_bytes(), collateral)


def test_signing_chain_to_another_root(pki: DcapPki) -> None:
    other = DcapPki.create(now=NOW)
    trust = pki.trust().with_sim_roots(other.root_fingerprint())
    mixed = pki.collateral().model_copy(
        update={
            "qe_identity_issuer_chain": other.collateral().qe_identity_issuer_chain,
            "qe_identity": other.collateral().qe_identity,
            "qe_identity_signature": other.collateral().qe_identity_signature,
        }
    )
    with pytest.raises(CertificateError, match="different root"):
        DcapVerifier(trust).verify(pki.quote().to_bytes(), mixed, now=NOW)


# --- Step 3 -------------------------------------------------------------------------------------
def test_pck_revoked(pki: DcapPki) -> None:
    collateral = pki.collateral(pck_revoked=[pki.pck.serial_number])
    with pytest.raises(RevokedError, match="PCK certificate") as info:
        verify(pki, pki.quote().to_bytes(), collateral)
    assert info.value.step == "Step 3: PCK certificate chain and PCK CRL"


def test_pck_ca_revoked_by_root_crl(pki: DcapPki) -> None:
    collateral = pki.collateral(root_revoked=[pki.pck_ca.serial_number])
    with pytest.raises(RevokedError, match="PCK CA"):
        verify(pki, pki.quote().to_bytes(), collateral)


def test_root_crl_used_as_pck_crl(pki: DcapPki) -> None:
    collateral = pki.collateral()
    swapped = collateral.model_copy(update={"pck_crl": collateral.root_ca_crl})
    with pytest.raises(CertificateError, match="no certificate revocation list for this issuer"):
        verify(pki, pki.quote().to_bytes(), swapped)


def test_pck_crl_at_exactly_next_update(pki: DcapPki) -> None:
    crl = build_crl(
        issuer=pki.pck_ca, issuer_key=pki.pck_ca_key, this_update=ISSUE, next_update=NOW
    )
    with pytest.raises(ValidityError, match="PCK CRL is not valid any more"):
        verify(pki, pki.quote().to_bytes(), pki.collateral().model_copy(update={"pck_crl": crl}))


def test_missing_pck_crl(pki: DcapPki) -> None:
    collateral = pki.collateral().model_copy(update={"pck_crl": None})
    with pytest.raises(CollateralUnavailable, match="no PCK CRL"):
        verify(pki, pki.quote().to_bytes(), collateral)
    claims = verify(pki, pki.quote().to_bytes(), collateral, unsafe_allow_missing_pck_crl=True)
    assert claims.tcb_status is TcbStatus.UP_TO_DATE


def test_pck_not_yet_valid() -> None:
    pki = DcapPki.create(now=NOW)
    pki.pck = pki.issue_pck(pki.facts, not_before=NOW + timedelta(days=1))
    with pytest.raises(ValidityError, match="not yet valid"):
        verify(pki, pki.quote().to_bytes(), pki.collateral())


def test_pck_chain_signed_by_wrong_ca() -> None:
    pki = DcapPki.create(now=NOW)
    other = DcapPki.create(now=NOW)
    chain = pki.pck_chain_pem().replace(
        pki.pck_chain_pem().split(b"-----END CERTIFICATE-----")[0],
        other.pck_chain_pem().split(b"-----END CERTIFICATE-----")[0],
    )
    with pytest.raises(CertificateError, match=r"signature|issuer"):
        verify(pki, pki.quote(pck_chain_pem=chain).to_bytes(), pki.collateral())


def test_pck_chain_too_short(pki: DcapPki) -> None:
    only_leaf = (
        pki.pck_chain_pem().split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"
    )
    with pytest.raises(CertificateError, match="1 certificates"):
        verify(pki, pki.quote(pck_chain_pem=only_leaf).to_bytes(), pki.collateral())


def test_pck_without_sgx_extension() -> None:
    from sealpod.testing.dcap_builders import build_certificate

    pki = DcapPki.create(now=NOW)
    pki.pck = build_certificate(
        subject="no extension", key=pki.pck_key, issuer=pki.pck_ca, issuer_key=pki.pck_ca_key,
        not_before=ISSUE, not_after=NEXT, ca=False,
    )  # fmt: skip
    with pytest.raises(CertificateError, match="no SGX extension"):
        verify(pki, pki.quote().to_bytes(), pki.collateral())


# --- Steps 4 to 7 -------------------------------------------------------------------------------
def test_qe_report_signed_by_another_key(pki: DcapPki) -> None:
    quote = pki.quote()
    sig = replace(
        quote.signature_data,
        qe_report_signature=sign_rs(new_key(), quote.signature_data.qe_report.to_bytes()),
    )
    with pytest.raises(EvidenceSignatureError, match="QE report signature") as info:
        verify(pki, replace(quote, signature_data=sig).to_bytes(), pki.collateral())
    assert info.value.step == "Step 4: QE report signature by the PCK key"


def test_qe_report_data_does_not_bind_key(pki: DcapPki) -> None:
    report = qe_report_for(raw_point(new_key()), bytes(32), tee="sgx")
    quote = pki.quote(qe_report=report)
    with pytest.raises(EvidenceSignatureError, match="SHA-256") as info:
        verify(pki, quote.to_bytes(), pki.collateral())
    assert info.value.step == "Step 5: QE report data binds the attestation key"


def test_qe_report_data_upper_half_must_be_zero(pki: DcapPki) -> None:
    att = raw_point(pki.attestation_key)
    bound = hashlib.sha256(att + bytes(range(32))).digest() + b"\x01" + bytes(31)
    report = qe_report_for(att, bytes(range(32)), tee="sgx", report_data=bound)
    with pytest.raises(EvidenceSignatureError, match="followed by zeros"):
        verify(pki, pki.quote(qe_report=report).to_bytes(), pki.collateral())


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("mr_signer", b"\x01" * 32, "MRSIGNER"),
        ("isv_prod_id", 9, "ISVPRODID"),
        ("misc_select", 1, "MISCSELECT"),
        ("attributes", bytes.fromhex("13000000000000000000000000000000"), "ATTRIBUTES"),
    ],
)
def test_qe_identity_mismatch(pki: DcapPki, field: str, value: object, match: str) -> None:
    att = raw_point(pki.attestation_key)
    report = qe_report_for(att, bytes(range(32)), tee="sgx", **{field: value})
    with pytest.raises(IdentityMismatch, match=match) as info:
        verify(pki, pki.quote(qe_report=report).to_bytes(), pki.collateral())
    assert info.value.step == "Step 6: QE identity"


def test_qe_attributes_outside_mask_are_ignored(pki: DcapPki) -> None:
    att = raw_point(pki.attestation_key)
    attrs = bytes.fromhex("15000000000000000000000000000000")  # bit 2 is masked out
    report = qe_report_for(att, bytes(range(32)), tee="sgx", attributes=attrs)
    assert verify(pki, pki.quote(qe_report=report).to_bytes(), pki.collateral()).tcb_status


def test_qe_svn_below_every_level(pki: DcapPki) -> None:
    doc = qe_doc(levels=[{"tcb": {"isvsvn": 10}, "tcbDate": _ts(ISSUE), "tcbStatus": "UpToDate"}])
    with pytest.raises(NoMatchingTcbLevel, match="no matching QE TCB level found") as info:
        verify(pki, pki.quote().to_bytes(), pki.collateral(qe_identity=doc))
    assert info.value.step == "Step 9: QE TCB level"


def test_quote_signature_over_changed_body(pki: DcapPki) -> None:
    quote = pki.quote()
    forged = replace(quote, body=replace(quote.body, report_data=b"\x01" * 64))
    with pytest.raises(EvidenceSignatureError, match="quote signature") as info:
        verify(pki, forged.to_bytes(), pki.collateral())
    assert info.value.step == "Step 7: quote signature by the attestation key"


def test_quote_signature_over_changed_header(pki: DcapPki) -> None:
    quote = pki.quote()
    forged = replace(quote, header=replace(quote.header, user_data=b"\x01" * 20))
    with pytest.raises(EvidenceSignatureError, match="quote signature"):
        verify(pki, forged.to_bytes(), pki.collateral())


def test_attestation_key_not_on_curve(pki: DcapPki) -> None:
    quote = pki.quote()
    key = b"\x01" * 64
    report = qe_report_for(key, quote.signature_data.qe_auth_data, tee="sgx")
    sig = replace(
        quote.signature_data,
        attestation_key=key,
        qe_report=report,
        qe_report_signature=sign_rs(pki.pck_key, report.to_bytes()),
    )
    with pytest.raises(EvidenceSignatureError, match="quote signature"):
        verify(pki, replace(quote, signature_data=sig).to_bytes(), pki.collateral())


# --- Step 8 -------------------------------------------------------------------------------------
def test_fmspc_mismatch(pki: DcapPki) -> None:
    doc = tcb_doc(pki)
    doc["fmspc"] = "11111F000000"
    with pytest.raises(IdentityMismatch, match="FMSPC") as info:
        verify(pki, pki.quote().to_bytes(), pki.collateral(tcb_info=doc))
    assert info.value.step == "Step 8: platform TCB level"


def test_fmspc_compare_is_case_insensitive(pki: DcapPki) -> None:
    for text in (pki.facts.fmspc.hex().upper(), pki.facts.fmspc.hex().lower()):
        doc = tcb_doc(pki)
        doc["fmspc"] = text
        assert verify(pki, pki.quote().to_bytes(), pki.collateral(tcb_info=doc)).tcb_status


def test_pceid_mismatch(pki: DcapPki) -> None:
    doc = tcb_doc(pki)
    doc["pceId"] = "1111"
    with pytest.raises(IdentityMismatch, match="PCEID"):
        verify(pki, pki.quote().to_bytes(), pki.collateral(tcb_info=doc))


def test_tcb_info_for_other_tee(pki: DcapPki) -> None:
    with pytest.raises(IdentityMismatch, match="TCB Info is for TDX"):
        verify(pki, pki.quote().to_bytes(), pki.collateral(tcb_info=tcb_doc(pki, "tdx")))


def test_tcb_info_v2_serves_sgx(pki: DcapPki) -> None:
    flat = {f"sgxtcbcomp{i:02d}svn": 2 for i in range(1, 17)} | {"pcesvn": 13}
    doc = {
        "version": 2, "issueDate": _ts(ISSUE), "nextUpdate": _ts(NEXT),
        "fmspc": pki.facts.fmspc.hex(), "pceId": "0000", "tcbType": 0,
        "tcbEvaluationDataNumber": 17,
        "tcbLevels": [{"tcb": flat, "tcbDate": _ts(ISSUE), "tcbStatus": "SWHardeningNeeded"}],
    }  # fmt: skip
    claims = verify(pki, pki.quote().to_bytes(), pki.collateral(tcb_info=doc))
    assert claims.tcb_status is TcbStatus.SW_HARDENING_NEEDED
    assert claims.advisory_ids == ()


def test_no_matching_platform_level(pki: DcapPki) -> None:
    doc = tcb_doc(pki, levels=[level([3] * 16, 13, "UpToDate")])
    with pytest.raises(NoMatchingTcbLevel, match="no matching TCB level found") as info:
        verify(pki, pki.quote().to_bytes(), pki.collateral(tcb_info=doc))
    assert info.value.step == "Step 8: platform TCB level"


def test_pcesvn_below_every_level(pki: DcapPki) -> None:
    doc = tcb_doc(pki, levels=[level([2] * 16, 14, "UpToDate")])
    with pytest.raises(NoMatchingTcbLevel):
        verify(pki, pki.quote().to_bytes(), pki.collateral(tcb_info=doc))


def test_highest_matching_level_wins_in_any_order(pki: DcapPki) -> None:
    levels = [
        level([1] * 16, 10, "OutOfDate", advisories=["SA-OLD"]),
        level([3] * 16, 13, "UpToDate"),
        level([2] * 16, 13, "SWHardeningNeeded", advisories=["SA-2"]),
    ]
    claims = verify(
        pki, pki.quote().to_bytes(), pki.collateral(tcb_info=tcb_doc(pki, levels=levels))
    )
    assert claims.tcb_status is TcbStatus.SW_HARDENING_NEEDED
    assert claims.advisory_ids == ("SA-2",)


def _tdx_levels(tdx: list[int], status: str = "UpToDate") -> list[dict[str, Any]]:
    return [level([2] * 16, 13, status, tdx=tdx)]


def test_tdx_components_0_and_1_skipped_for_module_version_above_0(pki: DcapPki) -> None:
    body = td_body(tee_tcb_svn=bytes([1, 1, 5]) + bytes(13))
    doc = tcb_doc(pki, "tdx", levels=_tdx_levels([9, 9, 5] + [0] * 13))
    claims = verify(
        pki, pki.quote(tee="tdx", body=body).to_bytes(), pki.collateral(tee="tdx", tcb_info=doc)
    )
    assert claims.tcb_status is TcbStatus.UP_TO_DATE


def test_tdx_component_2_still_compared(pki: DcapPki) -> None:
    body = td_body(tee_tcb_svn=bytes([1, 1, 4]) + bytes(13))
    doc = tcb_doc(pki, "tdx", levels=_tdx_levels([0, 0, 5] + [0] * 13))
    with pytest.raises(NoMatchingTcbLevel):
        verify(
            pki, pki.quote(tee="tdx", body=body).to_bytes(), pki.collateral(tee="tdx", tcb_info=doc)
        )


def test_tdx_module_version_0_compares_all_components(pki: DcapPki) -> None:
    body = td_body(tee_tcb_svn=bytes([3, 0, 5]) + bytes(13))
    ok = tcb_doc(pki, "tdx", levels=_tdx_levels([3, 0, 5] + [0] * 13))
    assert verify(
        pki, pki.quote(tee="tdx", body=body).to_bytes(), pki.collateral(tee="tdx", tcb_info=ok)
    )
    low = tcb_doc(pki, "tdx", levels=_tdx_levels([4, 0, 5] + [0] * 13))
    with pytest.raises(NoMatchingTcbLevel):
        verify(
            pki, pki.quote(tee="tdx", body=body).to_bytes(), pki.collateral(tee="tdx", tcb_info=low)
        )


def test_tdx_module_mrsigner_mismatch(pki: DcapPki) -> None:
    body = td_body(mr_signer_seam=b"\x01" * 48)
    with pytest.raises(IdentityMismatch, match="MRSIGNERSEAM"):
        verify(pki, pki.quote(tee="tdx", body=body).to_bytes(), pki.collateral(tee="tdx"))


def test_tdx_base_module_mrsigner_mismatch(pki: DcapPki) -> None:
    body = td_body(tee_tcb_svn=bytes([1, 0]) + bytes(14))
    doc = tcb_doc(
        pki, "tdx", levels=_tdx_levels([0] * 16),
        tdx_module={"mrsigner": "11" * 48, "attributes": "00" * 8, "attributesMask": "FF" * 8},
    )  # fmt: skip
    with pytest.raises(IdentityMismatch, match="MRSIGNERSEAM"):
        verify(
            pki, pki.quote(tee="tdx", body=body).to_bytes(), pki.collateral(tee="tdx", tcb_info=doc)
        )


def test_tdx_seam_attributes_mismatch(pki: DcapPki) -> None:
    body = td_body(seam_attributes=b"\x01" + bytes(7))
    with pytest.raises(IdentityMismatch, match="SEAMATTRIBUTES"):
        verify(pki, pki.quote(tee="tdx", body=body).to_bytes(), pki.collateral(tee="tdx"))


def test_tdx_module_identity_missing(pki: DcapPki) -> None:
    body = td_body(tee_tcb_svn=bytes([1, 3]) + bytes(14))
    with pytest.raises(IdentityMismatch, match="TDX_03"):
        verify(pki, pki.quote(tee="tdx", body=body).to_bytes(), pki.collateral(tee="tdx"))


def _module(levels: list[tuple[int, str, list[str]]]) -> dict[str, Any]:
    return {
        "id": "tdx_01",  # matched case-insensitively
        "mrsigner": "00" * 48,
        "attributes": "00" * 8,
        "attributesMask": "FF" * 8,
        "tcbLevels": [
            {"tcb": {"isvsvn": svn}, "tcbDate": _ts(ISSUE), "tcbStatus": st, "advisoryIDs": adv}
            for svn, st, adv in levels
        ],
    }


def test_tdx_module_svn_below_every_level(pki: DcapPki) -> None:
    doc = tcb_doc(pki, "tdx", tdx_module_identities=[_module([(5, "UpToDate", [])])])
    with pytest.raises(NoMatchingTcbLevel, match="TDX module"):
        verify(pki, pki.quote(tee="tdx").to_bytes(), pki.collateral(tee="tdx", tcb_info=doc))


def test_tdx_module_out_of_date_folds_into_status(pki: DcapPki) -> None:
    doc = tcb_doc(
        pki, "tdx",
        levels=_tdx_levels([0] * 16, "UpToDate"),
        tdx_module_identities=[_module([(5, "UpToDate", []), (1, "OutOfDate", ["SA-MOD"])])],
    )  # fmt: skip
    claims = verify(pki, pki.quote(tee="tdx").to_bytes(), pki.collateral(tee="tdx", tcb_info=doc))
    assert claims.tcb_status is TcbStatus.OUT_OF_DATE
    assert claims.advisory_ids == ("SA-MOD",)
    assert claims.platform["tdx_module_tcb_status"] == "OutOfDate"


# --- Step 10 ------------------------------------------------------------------------------------
def _qe_levels(status: str, advisories: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "tcb": {"isvsvn": 1},
            "tcbDate": _ts(ISSUE),
            "tcbStatus": status,
            "advisoryIDs": advisories,
        }
    ]


@pytest.mark.parametrize(
    ("platform", "qe", "expected"),
    [
        ("UpToDate", "OutOfDate", TcbStatus.OUT_OF_DATE),
        ("SWHardeningNeeded", "OutOfDate", TcbStatus.OUT_OF_DATE),
        ("ConfigurationNeeded", "OutOfDate", TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED),
        (
            "ConfigurationAndSWHardeningNeeded",
            "OutOfDate",
            TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED,
        ),
        ("OutOfDateConfigurationNeeded", "OutOfDate", TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED),
        ("ConfigurationNeeded", "UpToDate", TcbStatus.CONFIGURATION_NEEDED),
        ("OutOfDate", "UpToDate", TcbStatus.OUT_OF_DATE),
    ],
)
def test_status_merge(pki: DcapPki, platform: str, qe: str, expected: TcbStatus) -> None:
    tcb = tcb_doc(pki, levels=[level([2] * 16, 13, platform, advisories=["SA-P", "SA-X"])])
    qe_id = qe_doc(levels=_qe_levels(qe, ["SA-X", "SA-Q"]))
    claims = verify(pki, pki.quote().to_bytes(), pki.collateral(tcb_info=tcb, qe_identity=qe_id))
    assert claims.tcb_status is expected
    assert claims.advisory_ids == ("SA-P", "SA-X", "SA-Q")
    assert claims.platform["platform_tcb_status"] == platform
    assert claims.platform["qe_tcb_status"] == qe


def test_revoked_platform_is_a_typed_failure(pki: DcapPki) -> None:
    tcb = tcb_doc(pki, levels=[level([2] * 16, 13, "Revoked")])
    with pytest.raises(TcbError, match="Revoked") as info:
        verify(pki, pki.quote().to_bytes(), pki.collateral(tcb_info=tcb))
    assert info.value.step == "Step 10: TCB status"


def test_revoked_qe_is_a_typed_failure(pki: DcapPki) -> None:
    qe_id = qe_doc(levels=_qe_levels("Revoked", []))
    with pytest.raises(TcbError, match="Revoked"):
        verify(pki, pki.quote().to_bytes(), pki.collateral(qe_identity=qe_id))


def test_processor_ca_is_reported() -> None:
    pki = DcapPki.create(now=NOW, pck_ca_name="Sealpod Test SGX PCK Processor CA")
    assert verify(pki, pki.quote().to_bytes(), pki.collateral()).platform["ca"] == "processor"


def test_pck_facts_drive_matching() -> None:
    facts = PckFacts(comp_svns=(5,) * 16, pce_svn=20, fmspc=bytes.fromhex("a1b2c3d4e5f6"))
    pki = DcapPki.create(now=NOW, facts=facts)
    tcb = tcb_doc(pki, levels=[level([6] * 16, 20, "UpToDate"), level([5] * 16, 20, "OutOfDate")])
    claims = verify(pki, pki.quote().to_bytes(), pki.collateral(tcb_info=tcb))
    assert claims.tcb_status is TcbStatus.OUT_OF_DATE
    assert claims.platform["fmspc"] == "a1b2c3d4e5f6"
    assert claims.platform["pce_svn"] == 20


def test_header_svns_are_not_trusted_for_tcb(pki: DcapPki) -> None:
    # The header's pce_svn is unsigned by the PCK; only the certificate's value counts.
    quote = pki.quote(header={"pce_svn": 99})
    assert isinstance(quote.header, QuoteHeader)
    claims = verify(pki, quote.to_bytes(), pki.collateral())
    assert claims.platform["pce_svn"] == pki.facts.pce_svn


def test_collateral_json_is_signed_exactly(pki: DcapPki) -> None:
    raw, sig = sign_json(tcb_doc(pki), pki.tcb_key)
    collateral = pki.collateral().model_copy(update={"tcb_info": raw, "tcb_info_signature": sig})
    assert verify(pki, pki.quote().to_bytes(), collateral).tcb_status is TcbStatus.UP_TO_DATE


# --- TD 1.5 relaunch (Intel TDRelaunchCheck) ----------------------------------------------------
def _relaunch_doc(pki: DcapPki, module_ids: list[dict[str, Any]]) -> dict[str, Any]:
    return tcb_doc(pki, "tdx", levels=_tdx_levels([0] * 16), tdx_module_identities=module_ids)


def test_td_relaunch_advised_is_reported(pki: DcapPki) -> None:
    doc = _relaunch_doc(pki, [_module([(3, "UpToDate", []), (1, "OutOfDate", ["SA-MOD"])])])
    body = td_body(
        td15=True,
        tee_tcb_svn=bytes([1, 1, 1]) + bytes(13),
        tee_tcb_svn2=bytes([3, 1, 1]) + bytes(13),
    )
    claims = verify(
        pki,
        pki.quote(tee="tdx", version=5, body=body).to_bytes(),
        pki.collateral(tee="tdx", tcb_info=doc),
    )
    assert claims.tcb_status is TcbStatus.OUT_OF_DATE
    assert claims.platform["td_relaunch_advised"] == 1
    assert claims.platform["tee_tcb_svn2"] == body.tee_tcb_svn2.hex()  # type: ignore[attr-defined]


def test_no_relaunch_when_current_module_is_also_old(pki: DcapPki) -> None:
    doc = _relaunch_doc(pki, [_module([(3, "UpToDate", []), (1, "OutOfDate", [])])])
    body = td_body(td15=True, tee_tcb_svn=bytes([1, 1, 1]) + bytes(13))
    claims = verify(
        pki,
        pki.quote(tee="tdx", version=5, body=body).to_bytes(),
        pki.collateral(tee="tdx", tcb_info=doc),
    )
    assert claims.tcb_status is TcbStatus.OUT_OF_DATE
    assert "td_relaunch_advised" not in claims.platform


def test_relaunch_check_needs_the_current_module_identity(pki: DcapPki) -> None:
    doc = _relaunch_doc(pki, [_module([(3, "UpToDate", []), (1, "OutOfDate", [])])])
    body = td_body(
        td15=True,
        tee_tcb_svn=bytes([1, 1, 1]) + bytes(13),
        tee_tcb_svn2=bytes([3, 2, 1]) + bytes(13),
    )
    with pytest.raises(IdentityMismatch, match="TDX_02"):
        verify(
            pki,
            pki.quote(tee="tdx", version=5, body=body).to_bytes(),
            pki.collateral(tee="tdx", tcb_info=doc),
        )
