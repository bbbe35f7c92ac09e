"""appraise(): format dispatch, SNP certificates from the envelope or the caller, DCAP collateral
from a provider, and the simulated platform end to end."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_snp_factory import NOW, make_pki, pem, signed_report

from sealpod.collateral.models import QuoteCollateral
from sealpod.errors import CollateralUnavailable, MalformedEvidence, UntrustedRoot
from sealpod.evidence.envelope import EvidenceEnvelope, RawEvidence, load_evidence
from sealpod.verify.appraise import Appraiser, appraise, appraiser_for, dcap_platform
from sealpod.verify.claims import TcbStatus, TeeKind
from sealpod.verify.trust import DEFAULT_TRUST, TrustAnchors


def _trust() -> TrustAnchors:
    return TrustAnchors(intel_roots=frozenset(), amd_arks=frozenset({make_pki().ark_fingerprint}))


def _der_to_pem(der: bytes) -> bytes:
    body = base64.encodebytes(der)
    return b"-----BEGIN CERTIFICATE-----\n" + body + b"-----END CERTIFICATE-----\n"


def test_snp_raw_bytes_with_certificates_from_the_caller() -> None:
    pki = make_pki()
    claims = appraise(
        signed_report(pki), trust=_trust(), snp_vcek=pki.vcek, snp_chain=pki.chain, now=NOW
    )
    assert claims.tee is TeeKind.SNP


def test_snp_envelope_carrying_vcek_ask_ark() -> None:
    pki = make_pki()
    envelope = EvidenceEnvelope(
        tee="snp",
        evidence=base64.b64encode(signed_report(pki)).decode(),
        certificates=(_der_to_pem(pki.vcek) + pem(pki.ask, pki.ark)).decode(),
    )
    loaded = load_evidence(envelope.to_json().encode())
    claims = appraise(loaded, trust=_trust(), now=NOW)
    assert claims.snp is not None and claims.snp.signing_key == "vcek"


def test_snp_raw_evidence_from_hex() -> None:
    pki = make_pki()
    loaded = load_evidence(signed_report(pki).hex().encode())
    assert isinstance(loaded, RawEvidence)
    claims = appraise(loaded, trust=_trust(), snp_vcek=pki.vcek, snp_chain=pki.chain, now=NOW)
    assert claims.measurement == bytes(range(48))


def test_snp_without_certificates_is_collateral_unavailable() -> None:
    pki = make_pki()
    with pytest.raises(CollateralUnavailable, match="--vcek"):
        appraise(signed_report(pki), trust=_trust(), now=NOW)


def test_envelope_with_two_vceks_is_refused() -> None:
    from sealpod.errors import CertificateError

    pki = make_pki()
    envelope = EvidenceEnvelope(
        tee="snp",
        evidence=base64.b64encode(signed_report(pki)).decode(),
        certificates=(_der_to_pem(pki.vcek) + _der_to_pem(pki.vlek) + pem(pki.ark)).decode(),
    )
    with pytest.raises(CertificateError, match="2 VCEK/VLEK"):
        appraise(envelope, trust=_trust(), now=NOW)


def test_requested_tee_must_match_the_evidence() -> None:
    pki = make_pki()
    with pytest.raises(MalformedEvidence, match="but sgx was requested"):
        appraise(
            signed_report(pki),
            trust=_trust(),
            snp_vcek=pki.vcek,
            snp_chain=pki.chain,
            tee=TeeKind.SGX,
            now=NOW,
        )


def test_unknown_bytes_are_malformed() -> None:
    with pytest.raises(MalformedEvidence):
        appraise(b"\x09" * 100, trust=DEFAULT_TRUST, now=NOW)


def test_appraisers_are_shared_per_trust_set() -> None:
    assert appraiser_for(_trust()) is appraiser_for(_trust())
    assert isinstance(appraiser_for(DEFAULT_TRUST), Appraiser)
    assert appraiser_for(DEFAULT_TRUST) is not appraiser_for(_trust())


# --- the simulated platform (TEE helper's sealpod.tee.sim) --------------------------------------
@pytest.fixture(scope="module")
def sim_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("sim-home")


@pytest.mark.parametrize("kind", [TeeKind.SNP, TeeKind.SGX, TeeKind.TDX])
def test_simulated_evidence_of_every_kind_yields_sim_claims(sim_home: Path, kind: TeeKind) -> None:
    from sealpod.tee.sim import SimIdentity, SimPlatform

    platform = SimPlatform.load_or_init(sim_home)
    identity = SimIdentity(measurement=b"\x01" * 32, signer=b"\x02" * 32, product_id=3, svn=2)
    evidence = platform.evidence(kind, identity, b"nonce").to_envelope()
    now = dt.datetime.now(dt.UTC)
    trust = DEFAULT_TRUST.with_sim_roots(*platform.trust_anchors().sim_roots)
    claims = appraise(
        load_evidence(evidence.to_json().encode()),
        trust=trust,
        dcap_collateral=platform.dcap_collateral(now=now),
        now=now,
    )
    assert claims.tee is TeeKind.SIM and claims.emulated is kind
    assert claims.report_data == b"nonce".ljust(64, b"\x00")
    # Without the simulated roots the same evidence is refused: it chains to no vendor root.
    with pytest.raises(UntrustedRoot):
        appraise(
            evidence,
            trust=DEFAULT_TRUST,
            dcap_collateral=platform.dcap_collateral(now=now),
            now=now,
        )


def test_dcap_quote_without_collateral_is_collateral_unavailable(sim_home: Path) -> None:
    from sealpod.tee.sim import SimIdentity, SimPlatform

    platform = SimPlatform.load_or_init(sim_home)
    quote = platform.sgx_quote(SimIdentity(measurement=b"\x01" * 32, signer=b"\x02" * 32), b"")
    with pytest.raises(CollateralUnavailable, match="--collateral"):
        appraise(quote, trust=DEFAULT_TRUST, now=NOW)
    assert dcap_platform(quote)[1] == "platform"


# --- a real DCAP quote through the same entry point ---------------------------------------------
@pytest.mark.vectors
def test_real_sgx_quote_q1_with_fixed_collateral(vectors: Path) -> None:
    quote = (vectors / "dcap-qvl/sgx_quote").read_bytes()
    collateral = QuoteCollateral.from_dcap_qvl_json(
        (vectors / "dcap-qvl/sgx_quote_collateral.json").read_bytes()
    )
    assert dcap_platform(quote) == ("00a067110000", "processor")
    claims = appraise(
        load_evidence(quote),
        trust=DEFAULT_TRUST,
        dcap_collateral=collateral,
        now=dt.datetime(2025, 7, 19, 10, 1, 17, tzinfo=dt.UTC),
    )
    assert claims.tee is TeeKind.SGX
    assert claims.tcb_status is TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED
    assert claims.advisory_ids == ("INTEL-SA-00289", "INTEL-SA-00615")
