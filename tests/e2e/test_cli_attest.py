"""Attestation commands as a user runs them: ``sim``, ``attest``, ``verify``, ``verify-local``,
``tee detect``. Real processes for the demo path and the cross-process Gramine fake; the typer
runner in-process for the many refusal cases. Never a traceback; exit codes by error family."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import dcap_qvl
import pytest
from cli_process import TRACEBACK, quick_start, sealpod
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from sealpod.build.bundle import Bundle, load_bundle
from sealpod.cli.main import app
from sealpod.crypto.binding import attestation_report_data
from sealpod.settings import sealpod_home
from sealpod.tee.sim import SimPlatform, bundle_identity
from sealpod.testing.sim_fakes import clone_platform, sim_gramine
from sealpod.verify.claims import TcbStatus

pytestmark = pytest.mark.timeout(300)
NONCE = "ab" * 32


def run(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    stderr = result.stderr if result.stderr_bytes is not None else ""
    assert TRACEBACK not in stderr + result.stdout
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, stderr


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """keygen, init, build: the sample bundle, as the README makes it."""
    work = tmp_path_factory.mktemp("attest")
    quick_start(work, pod="pod", bundle="bundle")
    return work


@pytest.fixture(scope="module")
def bundle(work: Path) -> Bundle:
    return load_bundle(work / "bundle")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("sim-template")
    SimPlatform.init(home)
    return home


@pytest.fixture
def sim(template: Path) -> SimPlatform:
    return clone_platform(template, sealpod_home())


def test_demo_flow(work: Path, bundle: Bundle, tmp_path: Path) -> None:
    """sealpod sim init; sealpod attest --tee sim ...; sealpod verify --allow-simulation."""
    init = sealpod("sim", "init", "--json", cwd=work)
    assert init.returncode == 0, init.stderr
    assert json.loads(init.stdout)["simulated"] is True
    ev = tmp_path / "ev.json"
    attest = sealpod(
        "attest", "--tee", "sim", "--bundle", "bundle", "--nonce", NONCE, "-o", ev, "--json",
        cwd=work,
    )  # fmt: skip
    assert attest.returncode == 0, attest.stderr
    assert "SIMULATED" in attest.stderr
    envelope = json.loads(ev.read_text())
    assert envelope["tee"] == "sgx"
    binding = json.loads(envelope["runtime_data"])
    assert binding["nonce"] == NONCE and binding["measurement"] == bundle.measurement.hex()
    expected = attestation_report_data(
        bytes.fromhex(NONCE), base64.b64decode(binding["public_key"]), bundle.measurement
    )
    verified = sealpod("verify", ev, "--allow-simulation", "--json", cwd=work)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    claims = json.loads(verified.stdout)
    assert claims["verified"] is True and claims["tee"] == "sim" and claims["emulated"] == "sgx"
    assert claims["measurement"] == bundle.measurement.hex()
    assert claims["signer"] == bundle.signer_id.hex()
    assert claims["svn"] == bundle.manifest.identity.svn
    assert claims["report_data"] == expected.hex()
    refused = sealpod("verify", ev, "--json", cwd=work)
    assert refused.returncode == 13
    assert [v["code"] for v in json.loads(refused.stdout)["violations"]] == [
        "simulation_not_allowed"
    ]


@pytest.mark.parametrize("emulate", ["sgx", "tdx", "snp"])
def test_emulated_kinds_verify(sim: SimPlatform, work: Path, bundle: Bundle, emulate: str) -> None:
    ev = work / f"ev-{emulate}-{os.getpid()}.json"
    code, _, _ = run(
        "attest", "--tee", "sim", "--emulate", emulate, "--bundle", work / "bundle",
        "--report-data", "cd" * 64, "-o", ev,
    )  # fmt: skip
    assert code == 0
    assert json.loads(ev.read_text())["tee"] == emulate
    code, stdout, _ = run("verify", ev, "--allow-simulation", "--json")
    assert code == 0, stdout
    claims = json.loads(stdout)
    assert claims["emulated"] == emulate and claims["report_data"] == "cd" * 64
    assert claims["measurement"].startswith(bundle.measurement.hex())


@pytest.mark.parametrize("status", list(TcbStatus), ids=str)
def test_set_tcb_status_comes_back_from_verify(
    sim: SimPlatform, tmp_path: Path, status: TcbStatus
) -> None:
    ev = tmp_path / "ev.json"
    assert run("attest", "--tee", "sim", "--report-data", "01", "-o", ev)[0] == 0
    code, stdout, _ = run("sim", "set-tcb", status.value, "--json")
    assert code == 0 and json.loads(stdout)["tcb_status"] == status.value
    code, stdout, _ = run("verify", ev, "--allow-simulation", "--accept-tcb", "any", "--json")
    doc = json.loads(stdout)
    if status is TcbStatus.REVOKED:
        assert code == 12 and doc["error"]["code"] == "verify.tcb"
        assert "Revoked" in doc["error"]["message"]
    else:
        assert code == 0 and doc["tcb_status"] == status.value


def test_sim_init_exist_ok_keeps_the_platform(sim: SimPlatform) -> None:
    code, stdout, _ = run("sim", "init", "--exist-ok", "--json")
    assert code == 0
    assert json.loads(stdout)["sgx_root_sha256"] == sim.sgx_root_fingerprint().hex()
    code, stdout, _ = run("sim", "init", "--json")
    assert code == 2 and "already exists" in json.loads(stdout)["error"]["message"]


def test_sim_show_and_export(sim: SimPlatform, tmp_path: Path) -> None:
    code, stdout, _ = run("sim", "show", "--json")
    assert code == 0 and "PRIVATE" not in stdout
    doc = json.loads(stdout)
    assert doc["sgx_root_sha256"] == sim.sgx_root_fingerprint().hex()
    code, stdout, _ = run("sim", "export", tmp_path / "exp", "--json")
    assert code == 0
    files = set(json.loads(stdout)["files"])
    assert {"sgx_collateral.json", "tdx_collateral.json", "ask_ark.pem", "vcek.der"} <= files
    collateral = (tmp_path / "exp" / "sgx_collateral.json").read_text()
    assert dcap_qvl.QuoteCollateralV3.from_json(collateral).tcb_info.startswith('{"id":"SGX"')
    assert not any(
        "PRIVATE" in p.read_bytes().decode("latin-1") for p in (tmp_path / "exp").iterdir()
    )


def test_detect_lists_every_backend(tmp_path: Path) -> None:
    code, stdout, _ = run(
        "tee", "detect", "--json", "--gramine-root", tmp_path / "a", "--tsm-root", tmp_path / "t"
    )
    assert code == 0
    backends = {b["name"]: b for b in json.loads(stdout)["backends"]}
    assert set(backends) == {"gramine", "tsm", "sim"}
    assert not backends["tsm"]["available"] and "is absent" in backends["tsm"]["reason"]


def test_auto_without_hardware_names_what_is_missing(sim: SimPlatform, tmp_path: Path) -> None:
    code, stdout, _ = run(
        "attest", "--report-data", "00", "-o", tmp_path / "e.json", "--json",
        "--gramine-root", tmp_path / "a", "--tsm-root", tmp_path / "t",
    )  # fmt: skip
    assert code == 14
    error = json.loads(stdout)["error"]
    assert error["code"] == "tee.unavailable" and "--tee sim" in error["message"]
    assert not (tmp_path / "e.json").exists()


@pytest.mark.parametrize(
    ("args", "code", "match"),
    [
        (("--report-data", "00", "--nonce", NONCE), 2, "not both"),
        (("--nonce", NONCE), 2, "--nonce needs --bundle"),
        ((), 2, "give --report-data"),
        (("--report-data", "zz"), 2, "not hex"),
        (("--report-data", "00" * 65), 2, "at most 64"),
        (("--report-data", "00", "--emulate", "sev"), 2, "'sev' is not one of 'sgx', 'snp'"),
        (("--report-data", "00", "--tee", "tdx", "--emulate", "tdx"), 2, "--tee sim only"),
        (("--report-data", "00", "--tee", "gramine"), 2, "is not one of 'auto', 'sim', 'sgx'"),
        (("--report-data", "00", "--tee", "sim", "--target", "ab" * 32), 2, "--local only"),
    ],
)
def test_attest_refusals(
    sim: SimPlatform, tmp_path: Path, args: tuple[str, ...], code: int, match: str
) -> None:
    got, stdout, stderr = run("attest", "--tee", "sim", *args, "-o", tmp_path / "e.json", "--json")
    assert got == code, stdout
    # A value outside an option's choices is click's usage error (here, in-process, on stderr;
    # the installed script prints it as JSON too: tests/e2e/test_cli_hostile_inputs.py).
    assert match in (json.loads(stdout)["error"]["message"] if stdout.strip() else stderr)


def test_attest_sim_without_platform(tmp_path: Path) -> None:
    code, stdout, _ = run(
        "attest", "--tee", "sim", "--report-data", "00", "-o", tmp_path / "e", "--json"
    )
    assert code == 14 and "sealpod sim init" in json.loads(stdout)["error"]["message"]


def test_key_out_is_private_and_bound(
    sim: SimPlatform, work: Path, bundle: Bundle, tmp_path: Path
) -> None:
    ev, key = tmp_path / "ev.json", tmp_path / "eph.pem"
    code, _, _ = run(
        "attest", "--tee", "sim", "--bundle", work / "bundle", "--nonce", NONCE,
        "--key-out", key, "-o", ev,
    )  # fmt: skip
    assert code == 0
    assert (key.stat().st_mode & 0o777) == 0o600
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    code, stdout, _ = run("verify", ev, "--allow-simulation", "--json")
    expected = attestation_report_data(bytes.fromhex(NONCE), der, bundle.measurement)
    assert json.loads(stdout)["report_data"] == expected.hex()


def test_local_attestation(sim: SimPlatform, work: Path, tmp_path: Path) -> None:
    peer = "77" * 32
    report = tmp_path / "local.json"
    code, _, _ = run(
        "attest", "--tee", "sim", "--local", "--target", peer, "--bundle", work / "bundle",
        "--report-data", "99", "-o", report,
    )  # fmt: skip
    assert code == 0
    code, stdout, _ = run(
        "verify-local", report, "--target", peer, "--allow-simulation",
        "--expect-report-data", "99", "--json",
    )  # fmt: skip
    assert code == 0, stdout
    claims = json.loads(stdout)["claims"]
    identity = bundle_identity(load_bundle(work / "bundle"))
    assert claims["measurement"] == identity.measurement.hex() and claims["tee"] == "sim"
    # Only the target can check it; another enclave sees a MAC failure.
    code, stdout, _ = run(
        "verify-local", report, "--target", "66" * 32, "--allow-simulation", "--json"
    )
    assert code == 12 and json.loads(stdout)["error"]["code"] == "verify.signature"
    code, stdout, _ = run("verify-local", report, "--target", peer, "--json")
    assert code == 13 and "simulation_not_allowed" in stdout
    code, stdout, _ = run(
        "verify-local", report, "--target", peer, "--allow-simulation", "--expect-report-data",
        "98", "--json",
    )  # fmt: skip
    assert code == 13 and "report_data_mismatch" in stdout


@pytest.fixture
def gramine_root(sim: SimPlatform, bundle: Bundle, tmp_path: Path) -> Iterator[Path]:
    with sim_gramine(sim, bundle_identity(bundle), tmp_path / "attestation") as fake:
        yield fake.root
    assert fake.errors == []


def test_gramine_fake_serves_another_process(
    sim: SimPlatform, work: Path, bundle: Bundle, gramine_root: Path, tmp_path: Path
) -> None:
    ev = tmp_path / "gramine.json"
    result = sealpod(
        "attest", "--tee", "sgx", "--gramine-root", gramine_root, "--report-data", "5a" * 64,
        "-o", ev, cwd=work,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    code, stdout, _ = run("verify", ev, "--allow-simulation", "--json")
    claims = json.loads(stdout)
    assert code == 0 and claims["measurement"] == bundle.measurement.hex()
    assert claims["report_data"] == "5a" * 64
