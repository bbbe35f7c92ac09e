"""``sealpod gramine``: manifest, sign (a stand-in gramine-sgx-sign on PATH, and none at all),
sigstruct and check, as a user runs them."""

from __future__ import annotations

import json
import os
import stat
import sys
import tomllib
from pathlib import Path

import pytest
from cli_process import quick_start, sealpod

from conftest import third_party_vector
from sealpod.build.bundle import load_bundle
from sealpod.gramine.sigstruct import parse_sigstruct
from sealpod.kms.release import parse_release_policy
from sealpod.policy.model import Policy


def real(name: str) -> Path:
    """A public third-party vector (see docs/sgx.md); skips when absent."""
    return third_party_vector("sgx", name)


pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("gramine")
    quick_start(work, pod="pod", bundle="bundle")
    result = sealpod("keygen", "--type", "rsa-3072", "-o", "sgx.pem", cwd=work)
    assert result.returncode == 0, result.stderr
    return work


def fake_signer_on_path(directory: Path) -> dict[str, str]:
    """A ``gramine-sgx-sign`` stand-in (sealpod.testing.sigstruct) first on PATH."""
    directory.mkdir(exist_ok=True)
    tool = directory / "gramine-sgx-sign"
    tool.write_text(f'#!/bin/sh\nexec {sys.executable} -m sealpod.testing.sigstruct "$@"\n')
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{directory}{os.pathsep}{os.environ['PATH']}"}


def test_manifest_then_sign_records_identity_and_a_pinning_policy(work: Path) -> None:
    bundle = load_bundle(work / "bundle")
    result = sealpod("gramine", "manifest", "bundle", "--signer", bundle.signer_id.hex(),
                     "--json", cwd=work)  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["measurement"] == bundle.measurement.hex()
    manifest = work / "bundle" / "gramine" / "sealpod.manifest"
    assert tomllib.loads(manifest.read_text())["sgx"]["remote_attestation"] == "dcap"

    check = sealpod("gramine", "check", manifest, cwd=work)
    assert check.returncode == 0, check.stdout

    env = fake_signer_on_path(work / "bin")
    signed = sealpod("gramine", "sign", "bundle/gramine", "--key", "sgx.pem", "--json",
                     cwd=work, env=env)  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    identity = json.loads(signed.stdout)
    sig = parse_sigstruct((work / "bundle" / "gramine" / "sealpod.sig").read_bytes())
    assert identity["mr_enclave"] == sig.mr_enclave.hex()
    assert identity["mr_signer"] == sig.mr_signer.hex()
    recorded = json.loads((work / "bundle" / "gramine" / "sgx-identity.json").read_text())
    assert recorded["mr_signer"] == sig.mr_signer.hex()
    text = (work / "bundle" / "gramine" / "sgx-policy.toml").read_text()
    policy = Policy.from_toml(text.split("[release]")[0])
    assert policy.measurements == [sig.mr_enclave.hex()]
    assert policy.signer == sig.mr_signer.hex() and policy.tees == ["sgx"]
    release = parse_release_policy("app", text)  # what `sealpod kms policy put` stores
    assert list(release.release.secrets) == ["api-token", "tls-key", "volume.app-data"]

    shown = sealpod("gramine", "sigstruct", "bundle/gramine/sealpod.sig", "--json", cwd=work)
    assert shown.returncode == 0 and json.loads(shown.stdout)["signature_valid"] is True


def test_sign_without_gramine_says_it_is_absent(work: Path, tmp_path: Path) -> None:
    out = tmp_path / "g"
    assert sealpod("gramine", "manifest", "bundle", "-o", out, cwd=work).returncode == 0
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    result = sealpod("gramine", "sign", out, "--key", "sgx.pem", cwd=work,
                     env={"PATH": str(empty)})  # fmt: skip
    assert result.returncode == 14
    assert "gramine-sgx-sign is not on PATH" in result.stderr


def test_sign_refuses_a_key_that_is_not_rsa_3072(work: Path) -> None:
    result = sealpod("gramine", "sign", "bundle/gramine", "--key", "k.pem", cwd=work)
    assert result.returncode == 2
    assert "RSA-3072" in result.stderr


def test_sigstruct_of_a_real_vector_and_a_tampered_one(work: Path, tmp_path: Path) -> None:
    ok = sealpod("gramine", "sigstruct", real("enarx-encl.ss"), "--json", cwd=work)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["mr_enclave"].startswith("b999536238fcf4e9")
    data = bytearray(real("enarx-encl.ss").read_bytes())
    data[960] ^= 1  # MRENCLAVE
    (tmp_path / "bad.sig").write_bytes(bytes(data))
    bad = sealpod("gramine", "sigstruct", tmp_path / "bad.sig", cwd=work)
    assert bad.returncode == 12 and "INVALID" in bad.stdout
    (tmp_path / "short.sig").write_bytes(bytes(data[:100]))
    short = sealpod("gramine", "sigstruct", tmp_path / "short.sig", cwd=work)
    assert short.returncode == 10 and "1808" in short.stderr


def test_check_refuses_an_insecure_manifest(work: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.manifest"
    bad.write_text(
        'libos.entrypoint = "/app"\nfs.insecure__keys.default = "00"\nsgx.debug = "no"\n'
    )
    result = sealpod("gramine", "check", bad, "--json", cwd=work)
    assert result.returncode == 3
    problems = json.loads(result.stdout)["problems"]
    assert any("insecure" in p for p in problems) and any("sgx.debug" in p for p in problems)
    (tmp_path / "not.toml").write_text("= nope")
    assert sealpod("gramine", "check", tmp_path / "not.toml", cwd=work).returncode == 3
