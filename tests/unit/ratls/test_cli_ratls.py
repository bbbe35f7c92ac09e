"""`sealpod ratls cert` through Gramine's (fake) /dev/attestation and the simulator, `inspect` on
real certificates, and the CLI's refusals."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

from typer.testing import CliRunner

from sealpod.cli.main import app
from sealpod.policy.model import Policy
from sealpod.ratls.verify import verify_ratls_certificate
from sealpod.tee.sim import SimPlatform
from sealpod.testing.sim_fakes import sim_gramine

from .conftest import IDENTITY
from .test_ratls import real


def run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result.exit_code, result.stdout


def test_cert_through_gramine_attestation_files(sim: SimPlatform, tmp_path: Path) -> None:
    with sim_gramine(sim, IDENTITY, tmp_path / "att") as fake:
        code, out = run("ratls", "cert", "--tee", "sgx", "--gramine-root", tmp_path / "att",
                        "-o", tmp_path / "tls", "--legacy-gramine", "--json")  # fmt: skip
        assert fake.quotes_served == 2  # the interoperable quote and Gramine's legacy one
    assert code == 0, out
    doc = json.loads(out)
    assert doc["binds_key"] is True and doc["backend"] == "gramine"
    assert [e["extension"] for e in doc["evidence"]] == ["tcg-dice", "gramine-legacy"]
    assert stat.S_IMODE((tmp_path / "tls" / "key.pem").stat().st_mode) == 0o600
    cert = (tmp_path / "tls" / "cert.pem").read_bytes()
    issued = dt.datetime.now(dt.UTC)  # the CLI stamps the certificate with the real clock
    verdict = verify_ratls_certificate(
        cert, trust=sim.trust_anchors(), policy=Policy(allow_simulation=True), now=issued,
        dcap_collateral=sim.dcap_collateral(now=issued),
    )  # fmt: skip
    assert verdict.accepted and verdict.claims.measurement == IDENTITY.measurement


def test_cert_sim_snp_and_refusals(sim: SimPlatform, tmp_path: Path) -> None:
    code, out = run("ratls", "cert", "--tee", "sim", "--emulate", "snp", "-o", tmp_path / "t",
                    "--json")  # fmt: skip
    assert code == 0 and json.loads(out)["evidence"][0]["kind"] == "snp"
    assert run("ratls", "cert", "--tee", "sim", "-o", tmp_path / "t")[0] == 2  # exists
    assert run("ratls", "cert", "--tee", "bogus", "-o", tmp_path / "u")[0] == 2
    assert run("ratls", "cert", "--tee", "sgx", "--emulate", "tdx", "-o", tmp_path / "u")[0] == 2
    code, _ = run("ratls", "cert", "--tee", "sgx", "--gramine-root", tmp_path / "none",
                  "-o", tmp_path / "v")  # fmt: skip
    assert code == 14


def test_inspect_a_real_certificate() -> None:
    code, out = run("ratls", "inspect", real("gramine-cert.pem"), "--json")
    assert code == 0 and json.loads(out)["binds_key"] is True


def test_inspect_hostile_files(tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_bytes(
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    )
    assert run("ratls", "inspect", tmp_path / "junk.pem")[0] == 10
    assert run("ratls", "inspect", tmp_path / "missing.pem")[0] == 2
    assert run("ratls", "inspect", tmp_path)[0] == 2


def test_verify_refuses_bad_addresses_and_unreachable_servers(tmp_path: Path) -> None:
    assert run("ratls", "verify", "no-port")[0] == 2
    code, out = run("ratls", "verify", "127.0.0.1:1", "--json", "--timeout", "2")
    assert code == 14 and json.loads(out)["error"]["code"] == "tee.unreachable"


def test_verify_refuses_two_kinds_of_collateral(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text("{}")
    code, out = run("ratls", "verify", "127.0.0.1:1", "--collateral", tmp_path / "c.json",
                    "--tcb-info", tmp_path / "c.json", "--json")  # fmt: skip
    assert code == 2 and "either --collateral" in json.loads(out)["error"]["message"]
