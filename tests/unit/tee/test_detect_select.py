"""Backend detection and selection: auto never picks the simulator; reasons name what is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from sealpod.errors import ConfigError, TeeUnavailable
from sealpod.tee.base import Evidence, TeeBackend
from sealpod.tee.detect import detect_backends, probe_tsm
from sealpod.tee.gramine import GramineBackend
from sealpod.tee.names import TeeName
from sealpod.tee.select import open_backend, tsm_for
from sealpod.tee.sim import Emulated, SimBackend, SimIdentity, SimPlatform
from sealpod.tee.tsm import TsmBackend
from sealpod.testing.fake_tsm import FakeTsm
from sealpod.testing.sim_fakes import sim_gramine
from sealpod.verify.claims import TeeKind

pytestmark = pytest.mark.timeout(60)


def test_nothing_available(tmp_path: Path) -> None:
    statuses = detect_backends(gramine_root=tmp_path / "att", tsm_root=tmp_path / "tsm/report")
    by_name = {s.name: s for s in statuses}
    assert [s.name for s in statuses] == ["gramine", "tsm", "sim"]
    assert not any(s.available for s in statuses)
    assert "not inside Gramine" in by_name["gramine"].reason
    assert "tsm/report is absent" in by_name["tsm"].reason
    assert "sealpod sim init" in by_name["sim"].reason


def test_auto_refuses_without_hardware_and_does_not_fall_back_to_sim(
    tmp_path: Path, sim: SimPlatform
) -> None:
    with pytest.raises(TeeUnavailable, match="no TEE backend") as info:
        open_backend("auto", gramine_root=tmp_path / "att", tsm_root=tmp_path / "tsm")
    assert "--tee sim" in info.value.message and "gramine:" in info.value.message


def test_auto_picks_gramine(tmp_path: Path, sim: SimPlatform, identity: SimIdentity) -> None:
    with sim_gramine(sim, identity, tmp_path / "att"):
        backend = open_backend("auto", gramine_root=tmp_path / "att", tsm_root=tmp_path / "t")
        assert isinstance(backend, GramineBackend)
        statuses = detect_backends(gramine_root=tmp_path / "att", tsm_root=tmp_path / "t")
        assert statuses[0].available and statuses[0].details["emits"] == "sgx"


def test_gramine_without_dcap_is_not_available(
    tmp_path: Path, sim: SimPlatform, identity: SimIdentity
) -> None:
    with sim_gramine(sim, identity, tmp_path / "att", attestation_type="none"):
        status = detect_backends(gramine_root=tmp_path / "att", tsm_root=tmp_path / "t")[0]
    assert not status.available and "'none'" in status.reason


def test_tsm_probe_reads_the_provider(tmp_path: Path) -> None:
    root = tmp_path / "report"
    with FakeTsm(root, provider="sev_guest", producer=lambda i, p: (b"", b"")) as fake:
        # The real kernel populates entries on mkdir; the fake needs its ops for that.
        status = probe_tsm(root)
        assert not status.available and "provider" in status.reason
        assert TsmBackend(root, ops=fake).provider() == "sev_guest"
        assert fake.live_entries() == []


def test_open_sim_needs_an_initialised_platform() -> None:
    with pytest.raises(TeeUnavailable, match="sealpod sim init"):
        open_backend("sim")


@pytest.mark.parametrize("emulate", ["sgx", "tdx", "snp"])
def test_open_sim_emulates(sim: SimPlatform, identity: SimIdentity, emulate: str) -> None:
    backend = open_backend("sim", emulate=emulate, identity=identity)  # type: ignore[arg-type]
    assert isinstance(backend, SimBackend) and isinstance(backend, TeeBackend)
    evidence = backend.get_evidence(b"x")
    assert isinstance(evidence, Evidence)
    assert evidence.tee is TeeKind(emulate) and evidence.simulated
    assert (evidence.certificates is not None) == (emulate == "snp")
    described = backend.describe()
    assert described["emulate"] == emulate and "NO hardware protection" in str(described)


def test_unknown_backend_and_misplaced_emulate() -> None:
    with pytest.raises(ConfigError, match="expected one of auto, sim, sgx, snp, tdx"):
        open_backend("sgx-hw")
    with pytest.raises(ConfigError, match="--emulate applies to --tee sim only"):
        open_backend("tdx", emulate="tdx")


@pytest.mark.parametrize(("old", "new"), [("gramine", "--tee sgx"), ("tsm", "--tee tdx")])
def test_renamed_backends_name_their_replacement(old: str, new: str) -> None:
    with pytest.raises(ConfigError, match=f"--tee {old} was renamed: use {new}"):
        open_backend(old)


def test_tdx_or_snp_hardware_must_match_the_tsm_provider(tmp_path: Path) -> None:
    root = tmp_path / "report"
    with FakeTsm(root, provider="sev_guest", producer=lambda i, p: (b"", b"")) as fake:
        backend = TsmBackend(root, ops=fake)
        assert tsm_for(backend, TeeName.SNP) is backend
        with pytest.raises(TeeUnavailable, match="provider here is 'sev_guest'"):
            tsm_for(backend, TeeName.TDX)
        assert fake.live_entries() == []


def test_evidence_refuses_a_non_format_kind() -> None:
    with pytest.raises(ConfigError, match="expected sgx, tdx or snp"):
        Evidence(tee=TeeKind.SIM, raw=b"x")


def test_envelope_round_trip(sim: SimPlatform, identity: SimIdentity) -> None:
    from sealpod.evidence.envelope import load_evidence

    kinds: tuple[Emulated, ...] = ("sgx", "tdx", "snp")
    for kind in kinds:
        evidence = SimBackend(sim, identity, kind).get_evidence(b"r")
        envelope = evidence.to_envelope()
        loaded = load_evidence(envelope.to_json().encode())
        assert loaded.kind is evidence.tee
        assert loaded.raw == evidence.raw
