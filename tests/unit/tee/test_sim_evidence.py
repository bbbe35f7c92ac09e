"""Simulated evidence and collateral, checked against independent implementations.

dcap-qvl (Phala's Rust verifier, Python bindings) verifies the simulated SGX and TDX quotes
with the simulated collateral and root: the formats are right by a verifier that is not ours.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import dcap_qvl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sealpod.errors import CollateralUnavailable, ConfigError
from sealpod.evidence.dcap_body import SgxReportBody, Td10ReportBody
from sealpod.evidence.dcap_quote import parse_quote
from sealpod.evidence.snp_report import parse_report
from sealpod.tee import sim_config as cfg
from sealpod.tee.sim import DELAY_ENV, SimIdentity, SimPlatform
from sealpod.tee.sim_pki import pss_sha384
from sealpod.verify.amd import load_certificate, parse_endorsement_key
from sealpod.verify.claims import TcbStatus, TeeKind

REPORT_DATA = bytes(range(64))
# dcap-qvl names statuses like Intel; it refuses "Revoked" outright instead of returning it.
STATUSES = [s for s in TcbStatus if s is not TcbStatus.REVOKED]


def _qvl_verify(sim: SimPlatform, kind: TeeKind, quote: bytes) -> dcap_qvl.VerifiedReport:
    collateral = dcap_qvl.QuoteCollateralV3.from_json(sim.collateral(kind).to_dcap_qvl_json())
    return dcap_qvl.verify_with_root_ca(
        quote, collateral, sim.cert_der("sgx-root"), int(time.time())
    )


def test_pck_extension_parses_with_dcap_qvl(sim: SimPlatform) -> None:
    for kind, fmspc, tcb in (
        (TeeKind.SGX, cfg.SGX_FMSPC, cfg.SGX_PCK_TCB),
        (TeeKind.TDX, cfg.TDX_FMSPC, cfg.TDX_PCK_TCB),
    ):
        ext = dcap_qvl.parse_pck_extension_from_pem(sim.pck_chain_pem(kind))
        assert ext.fmspc == fmspc
        assert ext.pce_id == cfg.PCE_ID
        assert ext.pce_svn == tcb.pce_svn
        assert ext.cpu_svn == tcb.cpu_svn
        assert ext.ppid.hex() == sim.config.ppid
        assert ext.sgx_type == 0


def test_vcek_extensions_parse_with_the_amd_parser(sim: SimPlatform) -> None:
    key = parse_endorsement_key(load_certificate(sim.vcek_der(), role="VCEK"))
    assert key.kind == "vcek"
    assert key.product.value == cfg.SNP_PRODUCT
    assert key.hwid == bytes.fromhex(sim.config.chip_id)
    assert key.tcb.to_u64() == cfg.SNP_TCB.to_u64()


def test_amd_chain_is_rsa_pss_sha384(sim: SimPlatform) -> None:
    ark, ask, vcek = sim.cert("ark"), sim.cert("ask"), sim.cert("vcek")
    for child, parent in ((ark, ark), (ask, ark), (vcek, ask)):
        key = parent.public_key()
        assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 4096
        assert child.signature_hash_algorithm is not None
        key.verify(
            child.signature, child.tbs_certificate_bytes, pss_sha384(),
            child.signature_hash_algorithm,
        )  # fmt: skip
    vcek_key = vcek.public_key()
    assert isinstance(vcek_key, ec.EllipticCurvePublicKey)
    assert isinstance(vcek_key.curve, ec.SECP384R1)


def test_sgx_quote_fields(sim: SimPlatform, identity: SimIdentity) -> None:
    raw = sim.sgx_quote(identity, REPORT_DATA)
    quote = parse_quote(raw)
    assert quote.to_bytes() == raw
    assert quote.header.version == 3
    body = quote.body
    assert isinstance(body, SgxReportBody)
    assert body.mr_enclave == identity.measurement
    assert body.mr_signer == identity.signer
    assert (body.isv_prod_id, body.isv_svn) == (identity.product_id, identity.svn)
    assert body.report_data == REPORT_DATA
    assert body.debug is False
    leaf = x509.load_der_x509_certificate(quote.signature_data.certification_data.certificates()[0])
    assert "SIMULATED" in leaf.subject.rfc4514_string()


def test_sgx_debug_attribute(sim: SimPlatform, identity: SimIdentity) -> None:
    debug = SimIdentity(measurement=identity.measurement, signer=identity.signer, debug=True)
    body = parse_quote(sim.sgx_quote(debug, REPORT_DATA)).body
    assert isinstance(body, SgxReportBody) and body.debug


def test_tdx_quote_fields(sim: SimPlatform, identity: SimIdentity) -> None:
    raw = sim.tdx_quote(identity, REPORT_DATA)
    quote = parse_quote(raw)
    assert quote.header.version == 4 and quote.is_tdx
    body = quote.body
    assert isinstance(body, Td10ReportBody)
    assert body.mr_td == identity.measurement + bytes(16)
    assert body.mr_owner == identity.signer + bytes(16)
    assert body.report_data == REPORT_DATA
    assert body.tee_tcb_svn == cfg.TDX_TEE_TCB_SVN
    assert not body.debug


def test_snp_report_fields(sim: SimPlatform, identity: SimIdentity) -> None:
    report = parse_report(sim.snp_report(identity, REPORT_DATA, vmpl=2))
    assert report.measurement == identity.measurement + bytes(16)
    assert report.guest_svn == identity.svn
    assert report.family_id[:2] == identity.product_id.to_bytes(2, "little")
    assert report.vmpl == 2
    assert report.chip_id.hex() == sim.config.chip_id
    assert not report.guest_policy.debug
    assert report.product is not None and report.product.value == "Milan"


@pytest.mark.parametrize("kind", [TeeKind.SGX, TeeKind.TDX])
def test_dcap_qvl_verifies_sim_quotes(
    sim: SimPlatform, identity: SimIdentity, kind: TeeKind
) -> None:
    quote = sim.evidence(kind, identity, REPORT_DATA).raw
    report = _qvl_verify(sim, kind, quote)
    assert report.status == "UpToDate"
    assert list(report.advisory_ids) == []


@pytest.mark.parametrize("status", STATUSES, ids=lambda s: s.value)
def test_dcap_qvl_sees_every_set_tcb_status(
    sim: SimPlatform, identity: SimIdentity, status: TcbStatus
) -> None:
    updated = sim.set_tcb(status, ("INTEL-SA-00615",))
    for kind in (TeeKind.SGX, TeeKind.TDX):
        report = _qvl_verify(updated, kind, updated.evidence(kind, identity, REPORT_DATA).raw)
        assert report.status == status.value
        assert "INTEL-SA-00615" in report.advisory_ids


def test_dcap_qvl_refuses_revoked(sim: SimPlatform, identity: SimIdentity) -> None:
    updated = sim.set_tcb(TcbStatus.REVOKED)
    with pytest.raises(ValueError, match="Revoked"):
        _qvl_verify(updated, TeeKind.SGX, updated.sgx_quote(identity, REPORT_DATA))


def test_dcap_qvl_refuses_a_foreign_root(sim: SimPlatform, identity: SimIdentity) -> None:
    other = SimPlatform.init(sim.state_dir.parent / "other")
    collateral = dcap_qvl.QuoteCollateralV3.from_json(
        sim.collateral(TeeKind.SGX).to_dcap_qvl_json()
    )
    with pytest.raises(ValueError):
        dcap_qvl.verify_with_root_ca(
            sim.sgx_quote(identity, REPORT_DATA), collateral, other.cert_der("sgx-root"),
            int(time.time()),
        )  # fmt: skip


def test_collateral_is_intel_shaped(sim: SimPlatform) -> None:
    col = sim.collateral(TeeKind.TDX, now=dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    info = json.loads(col.tcb_info)
    assert list(info)[:4] == ["id", "version", "issueDate", "nextUpdate"]
    assert info["id"] == "TDX" and info["version"] == 3
    assert info["issueDate"] == "2029-12-31T23:00:00Z"
    assert info["fmspc"] == cfg.TDX_FMSPC.hex().upper()
    assert info["tdxModuleIdentities"][0]["id"] == "TDX_01"
    qe = json.loads(col.qe_identity)
    assert qe["id"] == "TD_QE" and qe["isvprodid"] == 2
    assert len(col.tcb_info_signature) == 64
    assert col.tcb_info_response().startswith('{"tcbInfo":' + col.tcb_info)
    model = col.to_model()
    assert model.tcb_info == col.tcb_info


def test_collateral_provider_serves_only_sim_fmspcs(sim: SimPlatform) -> None:
    provider = sim.dcap_collateral()
    assert provider.get(cfg.SGX_FMSPC.hex(), "platform", TeeKind.SGX).tcb_info.startswith(
        '{"id":"SGX"'
    )
    with pytest.raises(CollateralUnavailable, match="fmspc"):
        provider.get("00906ed50000", "platform", TeeKind.SGX)
    with pytest.raises(CollateralUnavailable, match="ca is"):
        provider.get(cfg.SGX_FMSPC.hex(), "processor", TeeKind.SGX)
    with pytest.raises(CollateralUnavailable, match="not tdx"):
        provider.get(cfg.SGX_FMSPC.hex(), "platform", TeeKind.TDX)


def test_quote_delay_is_injected(
    sim: SimPlatform, identity: SimIdentity, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DELAY_ENV, "60")
    start = time.monotonic()
    sim.sgx_quote(identity, REPORT_DATA)
    assert time.monotonic() - start >= 0.06


@pytest.mark.parametrize("value", ["-1", "abc", "1e3", "600001"])
def test_quote_delay_must_be_sane(
    sim: SimPlatform, identity: SimIdentity, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(DELAY_ENV, value)
    with pytest.raises(ConfigError, match=DELAY_ENV):
        sim.sgx_quote(identity, REPORT_DATA)


def test_report_data_longer_than_64_bytes_is_refused(
    sim: SimPlatform, identity: SimIdentity
) -> None:
    with pytest.raises(ConfigError, match="at most 64"):
        sim.sgx_quote(identity, bytes(65))


def test_short_report_data_is_zero_padded(sim: SimPlatform, identity: SimIdentity) -> None:
    body = parse_quote(sim.sgx_quote(identity, b"abc")).body
    assert body.report_data == b"abc" + bytes(61)
