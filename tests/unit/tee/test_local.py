"""Local attestation on the simulated platform: the MAC binds the report to one target."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealpod.errors import EvidenceSignatureError, MalformedEvidence
from sealpod.tee.local import (
    REPORT_SIZE,
    LocalReport,
    LocalReportFile,
    SimLocalAttester,
    TargetInfo,
    verify_local_report,
)
from sealpod.tee.sim import SimIdentity, SimPlatform

REPORT_DATA = b"\x42" * 64


@pytest.fixture
def peer() -> SimIdentity:
    return SimIdentity(measurement=b"\x33" * 32, signer=b"\x44" * 32, product_id=9, svn=1)


def test_target_verifies_the_report(
    sim: SimPlatform, identity: SimIdentity, peer: SimIdentity
) -> None:
    target = TargetInfo.for_identity(peer)
    report = SimLocalAttester(sim, identity).report(target.to_bytes(), REPORT_DATA)
    assert len(report) == REPORT_SIZE
    claims = verify_local_report(sim, report, target=target)
    assert claims.mr_enclave == identity.measurement
    assert claims.mr_signer == identity.signer
    assert (claims.isv_prod_id, claims.isv_svn) == (identity.product_id, identity.svn)
    assert claims.report_data == REPORT_DATA
    assert claims.simulated and claims.to_json()["tee"] == "sim"


def test_another_enclave_cannot_verify_it(
    sim: SimPlatform, identity: SimIdentity, peer: SimIdentity
) -> None:
    report = SimLocalAttester(sim, identity).report(
        TargetInfo.for_identity(peer).to_bytes(), REPORT_DATA
    )
    with pytest.raises(EvidenceSignatureError, match="MAC does not verify"):
        verify_local_report(sim, report, target=TargetInfo.for_identity(identity))


def test_debug_target_is_another_target(
    sim: SimPlatform, identity: SimIdentity, peer: SimIdentity
) -> None:
    report = SimLocalAttester(sim, identity).report(
        TargetInfo.for_identity(peer).to_bytes(), REPORT_DATA
    )
    debug_peer = TargetInfo.for_identity(dataclasses.replace(peer, debug=True))
    with pytest.raises(EvidenceSignatureError):
        verify_local_report(sim, report, target=debug_peer)


def test_another_platform_cannot_verify_it(
    sim: SimPlatform, identity: SimIdentity, peer: SimIdentity
) -> None:
    target = TargetInfo.for_identity(peer)
    report = SimLocalAttester(sim, identity).report(target.to_bytes(), REPORT_DATA)
    other = SimPlatform.init(sim.state_dir.parent / "elsewhere")
    with pytest.raises(EvidenceSignatureError):
        verify_local_report(other, report, target=target)


@pytest.mark.parametrize("offset", [0, 64, 128, 256, 320, 383, 384, 415, 416, 431])
def test_every_tampered_byte_is_refused(
    sim: SimPlatform, identity: SimIdentity, peer: SimIdentity, offset: int
) -> None:
    target = TargetInfo.for_identity(peer)
    report = bytearray(SimLocalAttester(sim, identity).report(target.to_bytes(), REPORT_DATA))
    report[offset] ^= 0x01
    with pytest.raises((EvidenceSignatureError, MalformedEvidence)):
        verify_local_report(sim, bytes(report), target=target)


def test_wrong_size_is_malformed(sim: SimPlatform, peer: SimIdentity) -> None:
    with pytest.raises(MalformedEvidence, match="expected 432"):
        verify_local_report(sim, bytes(431), target=TargetInfo.for_identity(peer))


def test_target_info_round_trip_and_reserved_bytes(peer: SimIdentity) -> None:
    raw = TargetInfo.for_identity(peer).to_bytes()
    assert len(raw) == 512 and TargetInfo.from_bytes(raw).to_bytes() == raw
    bad = bytearray(raw)
    bad[200] = 1
    with pytest.raises(MalformedEvidence, match="reserved3"):
        TargetInfo.from_bytes(bytes(bad))


def test_report_round_trip(sim: SimPlatform, identity: SimIdentity, peer: SimIdentity) -> None:
    raw = SimLocalAttester(sim, identity).report(
        TargetInfo.for_identity(peer).to_bytes(), REPORT_DATA
    )
    assert LocalReport.from_bytes(raw).to_bytes() == raw


def test_report_file_rejects_junk() -> None:
    with pytest.raises(MalformedEvidence):
        LocalReportFile.parse(b'{"format": "sealpod-sgx-report/v1", "source": "sim"}')
    with pytest.raises(MalformedEvidence):
        LocalReportFile.parse(b"not json")


@given(st.binary(max_size=600))
def test_hostile_target_info_parses_or_raises_malformed(data: bytes) -> None:
    try:
        parsed = TargetInfo.from_bytes(data)
    except MalformedEvidence:
        return
    assert parsed.to_bytes() == data


@given(st.binary(min_size=430, max_size=434))
def test_hostile_report_parses_or_raises_malformed(data: bytes) -> None:
    try:
        parsed = LocalReport.from_bytes(data)
    except MalformedEvidence:
        return
    assert parsed.to_bytes() == data


@settings(max_examples=50)
@given(data=st.binary(min_size=REPORT_SIZE, max_size=REPORT_SIZE))
def test_forged_reports_never_verify(sim_template: Path, data: bytes) -> None:
    platform = SimPlatform.load(sim_template)
    target = TargetInfo(mr_enclave=b"\x33" * 32, attributes=bytes(16))
    with pytest.raises((EvidenceSignatureError, MalformedEvidence)):
        verify_local_report(platform, data, target=target)
