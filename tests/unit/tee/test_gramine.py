"""Gramine backend against a fake /dev/attestation served by the simulated platform."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sealpod.errors import EvidenceGenerationError, TeeUnavailable
from sealpod.evidence.dcap_body import SgxReportBody
from sealpod.evidence.dcap_quote import parse_quote
from sealpod.tee.gramine import GramineBackend
from sealpod.tee.local import LocalReport, TargetInfo
from sealpod.tee.sim import SimIdentity, SimPlatform
from sealpod.testing.fake_gramine import FakeGramine
from sealpod.testing.sim_fakes import sim_gramine
from sealpod.verify.claims import TeeKind

pytestmark = pytest.mark.timeout(60)
REPORT_DATA = b"\xa5" * 64


@pytest.fixture
def gramine(tmp_path: Path, sim: SimPlatform, identity: SimIdentity) -> Iterator[FakeGramine]:
    with sim_gramine(sim, identity, tmp_path / "attestation") as fake:
        yield fake
    assert fake.errors == []


def test_quote_carries_identity_and_report_data(
    gramine: FakeGramine, identity: SimIdentity
) -> None:
    backend = gramine.backend()
    assert backend.attestation_type() == "dcap"
    evidence = backend.get_evidence(REPORT_DATA)
    assert evidence.tee is TeeKind.SGX and evidence.source == "gramine"
    body = parse_quote(evidence.raw).body
    assert isinstance(body, SgxReportBody)
    assert body.mr_enclave == identity.measurement and body.report_data == REPORT_DATA


def test_successive_quotes_follow_the_report_data(gramine: FakeGramine) -> None:
    backend = gramine.backend()
    for i in range(5):
        data = bytes([i]) * 64
        assert parse_quote(backend.get_evidence(data).raw).body.report_data == data
    assert gramine.quotes_served == 5


def test_local_report_targets_the_given_enclave(
    gramine: FakeGramine, identity: SimIdentity
) -> None:
    backend = gramine.backend()
    mine = TargetInfo.from_bytes(backend.my_target_info())
    assert mine.mr_enclave == identity.measurement
    other = TargetInfo(mr_enclave=b"\x77" * 32, attributes=mine.attributes)
    report = LocalReport.from_bytes(backend.local_report(other.to_bytes(), REPORT_DATA))
    assert report.body.mr_enclave == identity.measurement
    assert report.body.report_data == REPORT_DATA


@pytest.mark.parametrize(
    ("kind", "match"),
    [("none", "attestation_type is 'none'"), ("epid", "retired EPID")],
)
def test_non_dcap_attestation_is_unavailable(
    tmp_path: Path, sim: SimPlatform, identity: SimIdentity, kind: str, match: str
) -> None:
    with sim_gramine(sim, identity, tmp_path / "att", attestation_type=kind) as fake:
        with pytest.raises(TeeUnavailable, match=match):
            fake.backend().get_evidence(REPORT_DATA)


def test_outside_gramine_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TeeUnavailable, match="not running inside a Gramine SGX enclave"):
        GramineBackend(tmp_path / "nothing").get_evidence(REPORT_DATA)


def test_short_quote_is_refused(tmp_path: Path) -> None:
    with FakeGramine(tmp_path / "att", quote=lambda rd: b"\x03\x00" + bytes(100)) as fake:
        with pytest.raises(EvidenceGenerationError, match="quote is 102 bytes"):
            fake.backend().get_evidence(REPORT_DATA)


def test_quote_for_other_report_data_is_refused(
    tmp_path: Path, sim: SimPlatform, identity: SimIdentity
) -> None:
    stale = sim.sgx_quote(identity, bytes(64))
    with FakeGramine(tmp_path / "att", quote=lambda rd: stale) as fake:
        with pytest.raises(EvidenceGenerationError, match="other report data"):
            fake.backend().get_evidence(REPORT_DATA)


def test_wrong_sized_target_info_is_refused(gramine: FakeGramine) -> None:
    with pytest.raises(EvidenceGenerationError, match="target_info is 10 bytes"):
        gramine.backend().local_report(bytes(10), REPORT_DATA)


def test_describe_names_root_and_type(gramine: FakeGramine, tmp_path: Path) -> None:
    info = gramine.backend().describe()
    assert info == {"backend": "gramine", "root": str(gramine.root), "attestation_type": "dcap"}
    assert GramineBackend(tmp_path / "x").describe()["attestation_type"] is None


def test_attestation_type_is_read_bounded(tmp_path: Path) -> None:
    # /dev/zero never ends: an unbounded read would never return; 64 bytes are read at most.
    (tmp_path / "attestation_type").symlink_to("/dev/zero")
    backend = GramineBackend(tmp_path)
    assert backend.attestation_type() == "\x00" * 64
    with pytest.raises(EvidenceGenerationError, match="expected 'dcap'"):
        backend.get_evidence(bytes(64))
