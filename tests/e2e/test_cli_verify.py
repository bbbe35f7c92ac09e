"""``sealpod verify`` as a user runs it: a real process, ``--json``, exit codes, plain words."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SEALPOD = [sys.executable, "-m", "sealpod.cli.main"]
S1_AT = "2025-07-01T00:00:00Z"
Q1_AT = "2025-07-19T10:01:17Z"


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SEALPOD, "verify", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),  # carries the test's isolated SEALPOD_HOME
        cwd=cwd,
        check=False,
    )


def run_json(*args: str | Path) -> tuple[int, dict[str, Any]]:
    proc = run(*args, "--json")
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def s1_args(vectors: Path) -> list[str | Path]:
    return [
        vectors / "go-sev-guest/attestation.bin",
        "--vcek",
        vectors / "go-sev-guest/vcek.testcer",
        "--cert-chain",
        vectors / "go-sev-guest/ask_ark_milan.pem",
        "--at",
        S1_AT,
    ]


JSON_KEYS = {
    "verified", "tee", "tcb_status", "advisory_ids", "measurement", "signer", "product_id",
    "svn", "debug", "report_data", "violations",
}  # fmt: skip


# --- real SNP evidence --------------------------------------------------------------------------
@pytest.mark.vectors
def test_snp_report_verifies_and_is_accepted_with_allow_debug(vectors: Path) -> None:
    code, doc = run_json(*s1_args(vectors), "--allow-debug")
    assert code == 0
    assert JSON_KEYS <= set(doc)
    assert doc["verified"] is True and doc["tee"] == "snp" and doc["tcb_status"] == "UpToDate"
    assert doc["measurement"] == (
        "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01"
    )
    assert doc["report_data"] == "0102030405" + "00" * 59
    assert doc["debug"] is True and doc["violations"] == [] and "error" not in doc


@pytest.mark.vectors
def test_snp_debug_guest_is_refused_by_the_default_policy(vectors: Path) -> None:
    code, doc = run_json(*s1_args(vectors))
    assert code == 13
    assert doc["verified"] is False and doc["authentic"] is True
    assert [v["code"] for v in doc["violations"]] == ["debug_not_allowed"]
    assert doc["error"] == {
        "code": "policy.violation",
        "message": "claims violate the policy: debug_not_allowed",
    }


@pytest.mark.vectors
def test_tampered_snp_report_fails_with_the_step(vectors: Path, tmp_path: Path) -> None:
    raw = bytearray((vectors / "go-sev-guest/attestation.bin").read_bytes())
    raw[0x50] ^= 0xFF
    tampered = tmp_path / "report.bin"
    tampered.write_bytes(bytes(raw))
    args = s1_args(vectors)
    args[0] = tampered
    code, doc = run_json(*args, "--allow-debug")
    assert code == 12
    assert doc["verified"] is False and doc["authentic"] is False and doc["tee"] is None
    error = doc["error"]
    assert isinstance(error, dict)
    assert error["code"] == "verify.signature"
    assert error["step"] == "Step 13: report signature"


@pytest.mark.vectors
def test_human_output_names_the_step_and_expected_vs_actual(vectors: Path) -> None:
    args = s1_args(vectors)
    args[2] = vectors / "virtee-sev/vcek_milan.der"  # the VCEK of another chip
    proc = run(*args)
    assert proc.returncode == 12
    assert "NOT VERIFIED" in proc.stderr
    assert "failed at Step 10: hwID equals CHIP_ID" in proc.stderr
    assert "expected: d49554ec" in proc.stderr and "actual: 3ac3fe21" in proc.stderr


@pytest.mark.vectors
def test_policy_file_and_every_violation(vectors: Path, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('measurements = ["' + "00" * 48 + '"]\n[snp]\nvmpl = 1\n')
    code, doc = run_json(*s1_args(vectors), "--policy", policy)
    assert code == 13
    assert [v["code"] for v in doc["violations"]] == [
        "debug_not_allowed",
        "measurement_not_allowed",
        "snp_vmpl_mismatch",
    ]


@pytest.mark.vectors
def test_malformed_policy_exit_13(vectors: Path, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("alow_debug = true\n")
    code, doc = run_json(*s1_args(vectors), "--policy", policy)
    assert code == 13
    assert doc["error"]["code"] == "policy.malformed"
    assert "alow_debug" in doc["error"]["message"]


@pytest.mark.vectors
def test_hex_and_envelope_evidence(vectors: Path, tmp_path: Path) -> None:
    import base64

    report = vectors / "virtee-sev/report_milan.hex"
    code, doc = run_json(
        report, "--vcek", vectors / "virtee-sev/vcek_milan.der",
        "--cert-chain", vectors / "go-sev-guest/ask_ark_milan.pem", "--at", S1_AT,
    )  # fmt: skip
    assert code == 0 and doc["tee"] == "snp"
    envelope = tmp_path / "evidence.json"
    envelope.write_text(
        json.dumps(
            {
                "tee": "snp",
                "evidence": base64.b64encode(bytes.fromhex(report.read_text())).decode(),
                "certificates": _pem((vectors / "virtee-sev/vcek_milan.der").read_bytes())
                + (vectors / "go-sev-guest/ask_ark_milan.pem").read_text(),
            }
        )
    )
    code, doc = run_json(envelope, "--at", S1_AT)
    assert code == 0 and doc["verified"] is True


# --- real DCAP evidence -------------------------------------------------------------------------
@pytest.mark.vectors
def test_sgx_quote_status_refused_then_accepted_with_accept_tcb(vectors: Path) -> None:
    args: list[str | Path] = [
        vectors / "dcap-qvl/sgx_quote",
        "--collateral",
        vectors / "dcap-qvl/sgx_quote_collateral.json",
        "--at",
        Q1_AT,
    ]
    code, doc = run_json(*args)
    assert code == 13
    assert doc["tcb_status"] == "ConfigurationAndSWHardeningNeeded"
    assert doc["advisory_ids"] == ["INTEL-SA-00289", "INTEL-SA-00615"]
    assert [v["code"] for v in doc["violations"]] == ["tcb_status_not_accepted"]
    code, doc = run_json(*args, "--accept-tcb", "UpToDate,ConfigurationAndSWHardeningNeeded")
    assert code == 0 and doc["verified"] is True and doc["tee"] == "sgx"


@pytest.mark.vectors
def test_separate_pcs_collateral_files(vectors: Path) -> None:
    code, doc = run_json(
        vectors / "automata/samples/quotev3.hex",
        "--tcb-info", vectors / "automata/evm-0825/sgx_tcbinfov3_00606a000000.json",
        "--qe-identity", vectors / "automata/evm-0825/sgx_qeidentity_v4.json",
        "--pck-crl", vectors / "automata/evm-0825/platform_crl.der",
        "--root-crl", vectors / "automata/solana-tests-data/intel_root_ca_crl.der",
        "--tcb-chain", vectors / "automata/solana-tests-data/signing.der",
        "--at", "2025-08-15T05:45:00Z",
    )  # fmt: skip
    assert code == 0
    assert doc["tcb_status"] == "SWHardeningNeeded" and doc["advisory_ids"] == ["INTEL-SA-00615"]


# --- simulated evidence -------------------------------------------------------------------------
@pytest.fixture
def sim_envelope(tmp_path: Path) -> Path:
    from sealpod.settings import sealpod_home
    from sealpod.tee.sim import SimIdentity, SimPlatform
    from sealpod.verify.claims import TeeKind

    platform = SimPlatform.load_or_init(sealpod_home())
    identity = SimIdentity(measurement=b"\x11" * 32, signer=b"\x22" * 32, product_id=1, svn=1)
    path = tmp_path / "sim-snp.json"
    path.write_text(platform.evidence(TeeKind.SNP, identity, b"nonce").to_envelope().to_json())
    return path


def test_simulated_evidence_is_refused_without_allow_simulation(sim_envelope: Path) -> None:
    code, doc = run_json(sim_envelope)
    assert code == 13
    assert doc["tee"] == "sim" and doc["emulated"] == "snp" and doc["simulated"] is True
    assert [v["code"] for v in doc["violations"]] == ["simulation_not_allowed"]


def test_simulated_evidence_is_accepted_with_allow_simulation(sim_envelope: Path) -> None:
    code, doc = run_json(sim_envelope, "--allow-simulation")
    assert code == 0 and doc["verified"] is True and doc["tee"] == "sim"
    proc = run(sim_envelope, "--allow-simulation")
    assert "SIMULATED evidence: no hardware protection" in proc.stdout


def test_allow_simulation_without_a_simulated_platform_is_an_error(tmp_path: Path) -> None:
    evidence = tmp_path / "x.bin"
    evidence.write_bytes(b"\x02\x00\x00\x00" + bytes(0x4A0 - 4))
    code, doc = run_json(evidence, "--allow-simulation")
    assert code == 14 and doc["error"]["code"] == "tee.unavailable"


# --- refusals of input --------------------------------------------------------------------------
def test_garbage_evidence_exit_10(tmp_path: Path) -> None:
    evidence = tmp_path / "garbage"
    evidence.write_bytes(b"\x07" * 100)
    code, doc = run_json(evidence)
    assert code == 10 and doc["error"]["code"] == "evidence.malformed"


def test_snp_without_certificates_exit_11(tmp_path: Path) -> None:
    evidence = tmp_path / "report.bin"
    report = bytearray(0x4A0)
    report[0] = 2
    report[0x0A] = 0x03  # guest policy bit 17 (and SMT)
    report[0x34] = 1
    evidence.write_bytes(bytes(report))
    code, doc = run_json(evidence)
    assert code == 11 and doc["error"]["code"] == "collateral.unavailable"


@pytest.mark.parametrize(
    "args",
    [
        ["--at", "yesterday"],
        ["--tee", "sev"],
        ["--accept-tcb", "Fine"],
    ],
)
def test_bad_options_exit_2(tmp_path: Path, args: list[str]) -> None:
    evidence = tmp_path / "e"
    evidence.write_bytes(b"\x07")
    code, doc = run_json(evidence, *args)
    assert code == 2 and doc["error"]["code"].startswith("config")  # config.usage: a bad choice
    assert "verified" not in doc, "bad input is an input error, not a verdict"
    plain = run(evidence, *args)
    assert "NOT VERIFIED" not in plain.stderr and "error" in plain.stderr


def test_an_invalid_policy_is_an_input_error_not_a_verdict(tmp_path: Path) -> None:
    evidence, policy = tmp_path / "e", tmp_path / "p.toml"
    evidence.write_bytes(b"\x07")
    policy.write_text("alow_debug = true\n")
    plain = run(evidence, "--policy", policy)
    assert plain.returncode == 13 and "NOT VERIFIED" not in plain.stderr
    assert "did you mean 'allow_debug'?" in plain.stderr


def test_missing_evidence_file_exit_2(tmp_path: Path) -> None:
    code, doc = run_json(tmp_path / "nope")
    assert code == 2 and "cannot read evidence" in doc["error"]["message"]


def _pem(der: bytes) -> str:
    import base64

    body = base64.encodebytes(der).decode()
    return f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n"
