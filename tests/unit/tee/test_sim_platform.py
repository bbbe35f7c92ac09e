"""The simulated platform's state directory: layout, modes, refusal of unsafe or broken state."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509

from sealpod.errors import ConfigError, TeeUnavailable
from sealpod.settings import sealpod_home
from sealpod.tee.sim import SimPlatform
from sealpod.tee.sim_platform import CERT_NAMES, KEY_TYPES
from sealpod.verify.claims import TcbStatus
from sealpod.verify.trust import DEFAULT_TRUST, fingerprint


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_dir_is_private(sim: SimPlatform) -> None:
    root = sim.state_dir
    assert root == sealpod_home() / "sim"
    assert _mode(root) == 0o700
    assert _mode(root / "keys") == 0o700
    for name in KEY_TYPES:
        assert _mode(root / "keys" / f"{name}.pem") == 0o600
    assert _mode(root / "keys" / "report-secret.bin") == 0o600
    assert _mode(root / "platform.json") == 0o600


def test_every_certificate_says_simulated(sim: SimPlatform) -> None:
    for name in CERT_NAMES:
        cert = sim.cert(name)
        cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
        org = cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)[0].value
        assert "SIMULATED" in str(cn), name
        assert "SIMULATED" in str(org) and "NO hardware protection" in str(org), name


def test_trust_anchors_hold_only_the_sim_roots(sim: SimPlatform) -> None:
    anchors = sim.trust_anchors()
    assert anchors.intel_roots == frozenset()
    assert anchors.amd_arks == frozenset()
    assert anchors.sim_roots == {
        fingerprint(sim.cert_der("sgx-root")),
        fingerprint(sim.cert_der("ark")),
    }
    # Combining with production anchors keeps them apart (TrustAnchors refuses overlap).
    combined = DEFAULT_TRUST.with_sim_roots(*anchors.sim_roots)
    assert combined.intel_roots == DEFAULT_TRUST.intel_roots


def test_no_private_key_material_in_repr_or_describe(sim: SimPlatform) -> None:
    secrets = [(sim.state_dir / "keys" / f"{n}.pem").read_bytes() for n in KEY_TYPES]
    text = repr(sim) + json.dumps(sim.describe()) + repr(sim.intel_pki())
    for pem in secrets:
        body = b"".join(pem.splitlines()[1:-1]).decode()
        assert body[:40] not in text
    assert "PRIVATE" not in text


def test_init_refuses_to_overwrite_without_force(sim: SimPlatform) -> None:
    with pytest.raises(ConfigError, match="already exists"):
        SimPlatform.init()


def test_init_force_makes_a_new_platform(sim: SimPlatform) -> None:
    old_root = sim.sgx_root_fingerprint()
    new = SimPlatform.init(force=True)
    assert new.sgx_root_fingerprint() != old_root
    assert SimPlatform.load().sgx_root_fingerprint() == new.sgx_root_fingerprint()
    assert not [p for p in sealpod_home().iterdir() if p.name.startswith(".sim.")]


def test_load_without_platform_says_how_to_make_one() -> None:
    with pytest.raises(TeeUnavailable, match="sealpod sim init"):
        SimPlatform.load()


def test_load_refuses_a_key_readable_by_others(sim: SimPlatform) -> None:
    key = sim.state_dir / "keys" / "ak-sgx.pem"
    os.chmod(key, 0o644)
    fresh = SimPlatform.load()
    with pytest.raises(ConfigError, match="mode 0644, expected 0600"):
        fresh.ec_key("ak-sgx")


def test_load_refuses_an_open_state_dir(sim: SimPlatform) -> None:
    os.chmod(sim.state_dir, 0o755)
    with pytest.raises(ConfigError, match="expected 0700"):
        SimPlatform.load()


def test_load_refuses_a_corrupt_config(sim: SimPlatform) -> None:
    (sim.state_dir / "platform.json").write_text('{"format": 1, "tcb_status": "Great"}')
    with pytest.raises(ConfigError, match=r"platform\.json is invalid"):
        SimPlatform.load()


def test_load_names_a_missing_certificate(sim: SimPlatform) -> None:
    (sim.state_dir / "certs" / "vcek.pem").unlink()
    with pytest.raises(ConfigError, match=r"vcek\.pem is missing"):
        SimPlatform.load()


def test_missing_key_is_named(sim: SimPlatform) -> None:
    (sim.state_dir / "keys" / "vcek.pem").unlink()
    with pytest.raises(ConfigError, match="'vcek' is missing"):
        SimPlatform.load().ec_key("vcek")


def test_load_or_init_creates_once(tmp_path: Path) -> None:
    first = SimPlatform.load_or_init(tmp_path)
    second = SimPlatform.load_or_init(tmp_path)
    assert first.sgx_root_fingerprint() == second.sgx_root_fingerprint()


def test_set_tcb_persists_and_bumps_the_evaluation_number(sim: SimPlatform) -> None:
    before = sim.config.tcb_evaluation_data_number
    updated = sim.set_tcb("outofdate", ("intel-sa-00615",))
    assert updated.config.status is TcbStatus.OUT_OF_DATE
    reloaded = SimPlatform.load()
    assert reloaded.config.status is TcbStatus.OUT_OF_DATE
    assert reloaded.config.advisory_ids == ("INTEL-SA-00615",)
    assert reloaded.config.tcb_evaluation_data_number == before + 1
    assert _mode(sim.state_dir / "platform.json") == 0o600


@pytest.mark.parametrize("status", ["Great", "", "UpToDate; rm -rf /"])
def test_set_tcb_refuses_unknown_status(sim: SimPlatform, status: str) -> None:
    with pytest.raises(ConfigError, match="expected one of"):
        sim.set_tcb(status)


@pytest.mark.parametrize("advisory", ["", "SA", "INTEL SA 1", "x" * 80])
def test_set_tcb_refuses_malformed_advisory(sim: SimPlatform, advisory: str) -> None:
    with pytest.raises(ConfigError, match="advisory"):
        sim.set_tcb("SWHardeningNeeded", (advisory,))
