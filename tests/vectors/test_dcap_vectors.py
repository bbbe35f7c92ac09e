"""Every DCAP entry of ../shared/vectors/README.md (sections A and D) with its stated outcome.

Each case runs at its pinned time (or at both ends of its collateral window) and must give exactly
the README's verdict, TCB status and advisory IDs. Skips visibly when the folder is absent.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sealpod.collateral.models import QeIdentity, QuoteCollateral, TcbInfo, split_signed_json
from sealpod.errors import (
    CertificateError,
    EvidenceSignatureError,
    IdentityMismatch,
    MalformedEvidence,
    NoMatchingTcbLevel,
    UntrustedRoot,
    ValidityError,
    VerificationError,
)
from sealpod.evidence.dcap_body import Td10ReportBody
from sealpod.evidence.dcap_quote import PckCertChain, parse_quote
from sealpod.testing import dcap_vectors as dv
from sealpod.verify.claims import TcbStatus, TeeKind
from sealpod.verify.dcap import DcapVerifier
from sealpod.verify.dcap_tcb import check_qe_identity, check_tcb_info_matches, check_tdx_module
from sealpod.verify.pck import pck_extensions
from sealpod.verify.trust import DEFAULT_TRUST, INTEL_SGX_ROOT_CA_SHA256, fingerprint

pytestmark = pytest.mark.vectors

CASES = [(v, t) for v in dv.A1 + dv.A2 for t in v.times]


def _id(case: tuple[dv.DcapVector, datetime]) -> str:
    vector, t = case
    return f"{vector.id}@{t}"


def test_intel_root_in_vectors_is_the_pinned_one(vectors: Path) -> None:
    der = (vectors / "dcap-qvl/Intel_SGX_RootCA.der").read_bytes()
    assert fingerprint(der) == INTEL_SGX_ROOT_CA_SHA256


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_vector(vectors: Path, case: tuple[dv.DcapVector, datetime]) -> None:
    vector, now = case
    quote, collateral = vector.load(vectors)
    verifier = DcapVerifier(
        DEFAULT_TRUST, unsafe_allow_missing_pck_crl=vector.unsafe_allow_missing_pck_crl
    )
    if vector.error is not None:
        with pytest.raises(vector.error, match=vector.error_match):
            verifier.verify(quote, collateral, now=now)
        return
    claims = verifier.verify(quote, collateral, now=now)
    assert claims.tcb_status is vector.status
    assert claims.advisory_ids == vector.advisories
    assert claims.debug is vector.debug
    assert claims.tee in (TeeKind.SGX, TeeKind.TDX)
    assert claims.emulated is None
    if vector.qe_status is not None:
        assert claims.platform["qe_tcb_status"] == vector.qe_status.value
    body = parse_quote(quote).body
    assert claims.report_data == body.report_data
    assert claims.measurement == (
        body.mr_td if isinstance(body, Td10ReportBody) else body.mr_enclave
    )


def test_vectors_round_trip(vectors: Path) -> None:
    seen: set[str] = set()
    for vector in dv.A1 + dv.A2:
        if vector.quote in seen:
            continue
        seen.add(vector.quote)
        raw = dv.load_quote(vectors, vector.quote, strip_trailing=vector.strip_trailing)
        assert parse_quote(raw).to_bytes() == raw


def test_q19_needs_the_unsafe_switch_without_pck_crl(vectors: Path) -> None:
    vector = next(v for v in dv.A1 if v.id == "Q19")
    quote, collateral = vector.load(vectors)
    from sealpod.errors import CollateralUnavailable

    with pytest.raises(CollateralUnavailable, match="no PCK CRL"):
        DcapVerifier(DEFAULT_TRUST).verify(quote, collateral, now=vector.times[0])


def test_padding_sizes_match_readme(vectors: Path) -> None:
    # README D.1: 70 bytes, and 3065 bytes in the 8000-byte buffers; v5 and SGX unpadded.
    expect = {
        "dcap-qvl/tdx_quote": 70,
        "dcap-qvl/quote-from-tappd.hex": 70,
        "dcap-qvl/tdx-quote.hex": 70,
        "dcap-qvl/near_quote_hex.txt": 70,
        "trustee/dcap/tdx_quote_6.dat": 70,
        "automata/samples/quotev4.hex": 3065,
        "automata/solana-tests-data/quote_tdx.bin": 3065,
        "automata/samples/quotev5.dat": 0,
        "dcap-qvl/sgx_quote": 0,
    }
    for rel, padding in expect.items():
        assert parse_quote(dv.load_quote(vectors, rel)).padding == padding, rel


# --- A.2: SPR_E4 --------------------------------------------------------------------------------
def test_spr_e4_trailing_text_is_refused(vectors: Path) -> None:
    # README D.1 calls these 39 bytes padding; they are ASCII text ("extra bytes(only for
    # testing purpose)"), and only zero padding may follow a quote.
    raw = dv.load_quote(vectors, dv.SPR_E4)
    assert b"extra bytes" in raw[-39:]
    with pytest.raises(MalformedEvidence, match="trailing padding"):
        parse_quote(raw)


def test_spr_e4_pck_extension_facts(vectors: Path) -> None:
    raw = dv.load_quote(vectors, dv.SPR_E4, strip_trailing=True)
    leaf = parse_quote(raw).signature_data.certification_data.certificates()[0]
    ext = pck_extensions(x509.load_der_x509_certificate(leaf))
    assert ext.ppid.hex() == dv.SPR_E4_PCK["ppid"]
    assert ext.fmspc.hex() == dv.SPR_E4_PCK["fmspc"]
    assert ext.pce_id.hex() == dv.SPR_E4_PCK["pce_id"]
    assert str(ext.tcb.pce_svn) == dv.SPR_E4_PCK["pce_svn"]
    assert ext.tcb.cpu_svn.hex() == dv.SPR_E4_PCK["cpu_svn"]


def test_q13_platform_instance_id(vectors: Path) -> None:
    raw = dv.load_quote(vectors, "trustee/dcap/tdx_quote_4.dat")
    leaf = parse_quote(raw).signature_data.certification_data.certificates()[0]
    ext = pck_extensions(x509.load_der_x509_certificate(leaf))
    assert ext.platform_instance_id is not None
    # trustee prints the OCTET STRING as a little-endian u128 converted to big-endian.
    assert ext.platform_instance_id[::-1].hex() == "82548d228d94d5e204a95b354dc61a02"


def test_q13_fields_match_trustee_expectations(vectors: Path) -> None:
    expected = json.loads((vectors / "trustee/dcap/parse_tdx_claims_expected.json").read_text())
    body = parse_quote(dv.load_quote(vectors, "trustee/dcap/tdx_quote_4.dat")).body
    assert isinstance(body, Td10ReportBody)
    want = expected["quote"]["body"]
    for name in ("mr_config_id", "mr_owner", "mr_owner_config"):
        assert getattr(body, name).hex() == want[name], name
    assert body.mr_td.hex() == want["mr_td"]
    assert body.report_data.hex() == want["report_data"]


def test_spr_e4_expired_in_2053(vectors: Path) -> None:
    quote = dv.load_quote(vectors, dv.SPR_E4, strip_trailing=True)
    collateral = dv.GO_TDX_COLLATERAL(vectors, quote)
    later = dv.at("2053-07-01T01:00:00Z")
    with pytest.raises(ValidityError, match="expired"):
        DcapVerifier(DEFAULT_TRUST).verify(quote, collateral, now=later)


# --- A.3: negative recipes on SPR_E4, one byte at a time ----------------------------------------
RECIPES = [
    (0x00, 3, MalformedEvidence, "version|reserved"),
    (0x278, 0x10, MalformedEvidence, None),
    (0x1343, 0x32, MalformedEvidence, "PEM"),
    (0x1329, 0x32, UntrustedRoot, "not pinned"),
    (0xF5F, 0x32, CertificateError, None),
    (0xB77, 0x32, CertificateError, None),
    (0x1E, 0x32, EvidenceSignatureError, "quote signature"),
    (0x3C, 0x32, EvidenceSignatureError, "quote signature"),
]


@pytest.mark.parametrize(("offset", "value", "error", "match"), RECIPES)
def test_spr_e4_byte_recipes(
    vectors: Path, offset: int, value: int, error: type[VerificationError], match: str | None
) -> None:
    quote = bytearray(dv.load_quote(vectors, dv.SPR_E4, strip_trailing=True))
    collateral = dv.GO_TDX_COLLATERAL(vectors, bytes(quote))
    assert quote[offset] != value
    quote[offset] = value
    with pytest.raises(error, match=match):
        DcapVerifier(DEFAULT_TRUST).verify(bytes(quote), collateral, now=dv.SPR_E4_TIME)


def test_spr_e4_pem_chain_nul_and_garbage(vectors: Path) -> None:
    quote = parse_quote(dv.load_quote(vectors, dv.SPR_E4, strip_trailing=True))
    pem = quote.signature_data.certification_data.pem

    def with_pem(data: bytes) -> bytes:
        sig = replace(quote.signature_data, certification_data=PckCertChain(pem=data))
        return replace(quote, signature_data=sig).to_bytes()

    assert parse_quote(with_pem(pem + b"\0")).signature_data.certification_data.pem == pem + b"\0"
    with pytest.raises(MalformedEvidence):
        parse_quote(with_pem(pem + b"\x01"))


def _go_tdx_parts(
    vectors: Path,
) -> tuple[bytes, QuoteCollateral, dict[str, object], dict[str, object]]:
    quote = dv.load_quote(vectors, dv.SPR_E4, strip_trailing=True)
    collateral = dv.GO_TDX_COLLATERAL(vectors, quote)
    return quote, collateral, json.loads(collateral.tcb_info), json.loads(collateral.qe_identity)


def test_collateral_edits_break_the_signature(vectors: Path) -> None:
    quote, collateral, tcb, qe = _go_tdx_parts(vectors)
    tcb["fmspc"] = "11111f000000"
    edited = collateral.model_copy(update={"tcb_info": json.dumps(tcb, separators=(",", ":"))})
    with pytest.raises(EvidenceSignatureError, match="TCB Info signature"):
        DcapVerifier(DEFAULT_TRUST).verify(quote, edited, now=dv.SPR_E4_TIME)
    qe["isvprodid"] = 3
    edited = collateral.model_copy(update={"qe_identity": json.dumps(qe, separators=(",", ":"))})
    with pytest.raises(EvidenceSignatureError, match="QE Identity signature"):
        DcapVerifier(DEFAULT_TRUST).verify(quote, edited, now=dv.SPR_E4_TIME)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [("fmspc", "11111f000000", "FMSPC"), ("pceId", "1111", "PCEID")],
)
def test_tcb_info_recipes_hit_their_check(
    vectors: Path, field: str, value: str, match: str
) -> None:
    # The signature step stops an edited document first; here the check itself is exercised
    # on the real quote's PCK facts with the edited (unsigned) document.
    quote, _, tcb, _ = _go_tdx_parts(vectors)
    tcb[field] = value
    leaf = parse_quote(quote).signature_data.certification_data.certificates()[0]
    pck = pck_extensions(x509.load_der_x509_certificate(leaf))
    with pytest.raises(IdentityMismatch, match=match):
        check_tcb_info_matches(TcbInfo.from_raw(json.dumps(tcb)), pck, TeeKind.TDX)


def test_tdx_module_mrsigner_recipe(vectors: Path) -> None:
    quote, _, tcb, _ = _go_tdx_parts(vectors)
    module = tcb["tdxModule"]
    assert isinstance(module, dict)
    module["mrsigner"] = "11" * 48
    body = parse_quote(quote).body
    assert isinstance(body, Td10ReportBody)
    with pytest.raises(IdentityMismatch, match="MRSIGNERSEAM"):
        check_tdx_module(body, TcbInfo.from_raw(json.dumps(tcb)))


@pytest.mark.parametrize(
    ("field", "value", "error", "match"),
    [
        ("miscselect", "00000001", IdentityMismatch, "MISCSELECT"),
        ("attributes", "13000000000000000000000000000000", IdentityMismatch, "ATTRIBUTES"),
        ("mrsigner", "00" * 32, IdentityMismatch, "MRSIGNER"),
        ("isvprodid", 3, IdentityMismatch, "ISVPRODID"),
        ("tcbLevels0.isvsvn", 10, NoMatchingTcbLevel, "no matching QE TCB level found"),
    ],
)
def test_qe_identity_recipes_hit_their_check(
    vectors: Path, field: str, value: object, error: type[VerificationError], match: str
) -> None:
    quote, _, _, qe = _go_tdx_parts(vectors)
    if field == "tcbLevels0.isvsvn":
        levels = qe["tcbLevels"]
        assert isinstance(levels, list)
        levels[0]["tcb"]["isvsvn"] = value
    else:
        qe[field] = value
    report = parse_quote(quote).signature_data.qe_report
    with pytest.raises(error, match=match):
        check_qe_identity(report, QeIdentity.from_raw(json.dumps(qe)))


def test_root_ca_crl_as_pck_crl_is_refused(vectors: Path) -> None:
    vector = next(v for v in dv.A1 if v.id == "Q6")
    quote, collateral = vector.load(vectors)
    swapped = collateral.model_copy(update={"pck_crl": collateral.root_ca_crl})
    with pytest.raises(CertificateError, match="no certificate revocation list for this issuer"):
        DcapVerifier(DEFAULT_TRUST).verify(quote, swapped, now=vector.times[0])


def test_at_exactly_pck_crl_next_update_is_refused(vectors: Path) -> None:
    vector = next(v for v in dv.A1 if v.id == "Q5")
    quote, collateral = vector.load(vectors)
    assert collateral.pck_crl is not None
    next_update = x509.load_der_x509_crl(collateral.pck_crl).next_update_utc
    assert next_update is not None
    DcapVerifier(DEFAULT_TRUST).verify(quote, collateral, now=next_update - timedelta(seconds=1))
    with pytest.raises(ValidityError, match="PCK CRL is not valid any more"):
        DcapVerifier(DEFAULT_TRUST).verify(quote, collateral, now=next_update)


# --- cross-time negatives and D.3/D.4 -----------------------------------------------------------
def test_q5_quote_with_q11_collateral_pck_not_yet_valid(vectors: Path) -> None:
    quote = dv.load_quote(vectors, "go-tdx-guest/quote_v5_sample.dat")
    collateral = dv.Q11_COLLATERAL(vectors, quote)
    with pytest.raises(ValidityError, match="not yet valid") as info:
        DcapVerifier(DEFAULT_TRUST).verify(quote, collateral, now=dv.at("2025-06-15T00:00:00Z"))
    assert info.value.step is not None and info.value.step.startswith("Step 3")


def test_q1_at_old_dcap_qvl_time_not_yet_valid(vectors: Path) -> None:
    vector = dv.A1[0]
    quote, collateral = vector.load(vectors)
    with pytest.raises(ValidityError, match="not yet valid"):
        DcapVerifier(DEFAULT_TRUST).verify(quote, collateral, now=dv.at("2025-06-19T08:13:22Z"))


def test_reissued_tcb_signing_cert_same_serial(vectors: Path) -> None:
    # D.3: both certificates verify the 2026 TCB Info; only the re-issued one is valid then.
    old = x509.load_pem_x509_certificates(dv.signing_chain_2018(vectors).encode())[0]
    new = x509.load_pem_x509_certificates(dv.signing_chain_2025(vectors).encode())[0]
    assert old.serial_number == new.serial_number
    assert old.public_key() == new.public_key()
    assert old.public_bytes(Encoding.DER) != new.public_bytes(Encoding.DER)

    quote = dv.load_quote(vectors, "go-tdx-guest/quote_v5_sample.dat")
    base = dv.Q4_COLLATERAL(vectors, quote)
    raw, signature = split_signed_json(
        (vectors / "go-tdx-guest/sample_tcbinfo_response_v5").read_bytes(), "tcbInfo", what="v5"
    )
    now = dv.at("2026-03-01T00:00:00Z")
    verifier = DcapVerifier(DEFAULT_TRUST)
    with_new = base.model_copy(update={"tcb_info": raw, "tcb_info_signature": signature})
    claims = verifier.verify(quote, with_new, now=now)
    assert claims.tcb_status is TcbStatus.UP_TO_DATE
    with_old = with_new.model_copy(update={"tcb_info_issuer_chain": dv.signing_chain_2018(vectors)})
    with pytest.raises(ValidityError, match="expired"):
        verifier.verify(quote, with_old, now=now)
    # and the cache did not remember the old certificate as good, nor the new one as bad
    assert verifier.verify(quote, with_new, now=now).tcb_status is TcbStatus.UP_TO_DATE
