"""SGX through Gramine, end to end without SGX: `sealpod run --tee sgx` starts a stand-in
`gramine-sgx` (on PATH) that runs sealpod's pre-main against a fake /dev/attestation tree; the
pre-main attests to a real `sealpod kms serve` on 127.0.0.1, writes the volume key to
/dev/attestation/keys before the workload starts, provisions env and files and execs the pod."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_kms_e2e import Logs, cli, sp, start_server, stop_server

import sealpod.gramine.launch as launch
from sealpod.build.bundle import build_bundle
from sealpod.build.keys import AuthorPrivateKey, KeyType, generate_key
from sealpod.gramine.pipeline import sign, write_manifest
from sealpod.gramine.premain import gramine_volume_key
from sealpod.kms.identity import identity_of_certificate, peer_certificate
from sealpod.runtime.events import Reporter
from sealpod.runtime.plan import RunOptions, TeeChoice
from sealpod.runtime.run import run_pod
from sealpod.spec.load import image_source, load_spec
from sealpod.tee.sim import SimIdentity, SimPlatform
from sealpod.testing.sim_fakes import sim_gramine

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
VOLUME_KEY = bytes(range(32))
KEY_NAME = "sealpod-volume-app-data"

SHOW = """#!/bin/sh
echo "token=$API_TOKEN style=$STYLE"
echo "file=$(cat "$SCRATCH/run/secrets/tls.key")"
echo "mode=$(stat -c %a "$SCRATCH/run/secrets/tls.key")"
echo "volume-key-bytes=$(wc -c < "$ATTESTATION/keys/sealpod-volume-app-data")"
echo "cwd=$(pwd)"
"""


def make_bundle(work: Path, *, kms_url: str, kms_identity: str, scratch: Path, att: Path) -> Path:
    rootfs = work / "rootfs"
    (rootfs / "app").mkdir(parents=True)
    (rootfs / "data").mkdir()
    show = rootfs / "app" / "show.sh"
    show.write_text(SHOW)
    show.chmod(0o755)
    (work / "sealpod.toml").write_text(f"""
[image]
source = "rootfs"
[process]
entrypoint = "/app/show.sh"
workdir = "/app"
user = "0:0"
[process.env]
STYLE = "plain"
SCRATCH = "{scratch}"
ATTESTATION = "{att}"
API_TOKEN = {{ secret = "api-token" }}
[[files]]
path = "/run/secrets/tls.key"
secret = "tls-key"
mode = 0o440
[[volumes]]
path = "/data"
name = "app-data"
[identity]
product_id = 7
svn = 1
[kms]
url = "{kms_url}"
identity = "{kms_identity}"
""")
    spec = load_spec(work / "sealpod.toml")
    bundle = build_bundle(spec, image=image_source(spec, work / "sealpod.toml"),
                          key=generate_key(), out=work / "bundle",
                          signed_at=datetime(2026, 1, 1, tzinfo=UTC))  # fmt: skip
    return bundle.path


def stand_in_loader(bin_dir: Path, *, bundle: Path, att: Path, scratch: Path) -> None:
    bin_dir.mkdir()
    loader = bin_dir / "gramine-sgx"
    loader.write_text(
        "#!/bin/sh\n"
        f'[ "$1" = sealpod ] && [ -f sealpod.manifest.sgx ] || exit 99\n'
        f"exec {sys.executable} -m sealpod.gramine.premain --bundle-dir {bundle}"
        f" --attestation-root {att} --root {scratch}\n"
    )
    loader.chmod(loader.stat().st_mode | stat.S_IXUSR)
    signer = bin_dir / "gramine-sgx-sign"
    signer.write_text(f'#!/bin/sh\nexec {sys.executable} -m sealpod.testing.sigstruct "$@"\n')
    signer.chmod(signer.stat().st_mode | stat.S_IXUSR)


def test_run_tee_sgx_premain_attests_provisions_and_writes_volume_keys_first(
    _isolated_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    logs = Logs()
    sp("kms", "init")
    log = tmp_path / "serve.log"
    logs.files.append(log)
    srv = start_server(_isolated_home, log, "--trust-sim", "--no-pcs")
    try:
        identity = identity_of_certificate(peer_certificate(srv.url))
        scratch, att = tmp_path / "scratch", tmp_path / "attestation"
        scratch.mkdir()
        bundle = make_bundle(tmp_path / "pod", kms_url=srv.url, kms_identity=identity,
                             scratch=scratch, att=att)  # fmt: skip
        # The enclave's "/" is the bundle's rootfs: a scratch copy of it stands in here.
        shutil.copytree(bundle / "rootfs", scratch, dirs_exist_ok=True)
        bin_dir = tmp_path / "bin"
        stand_in_loader(bin_dir, bundle=bundle, att=att, scratch=scratch)
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        write_manifest(bundle, bundle / "gramine", premain_dir="/opt/p", volume_dir="/var/v")
        sig = sign(bundle / "gramine", generate_key_rsa())

        (tmp_path / "tok").write_text("s3cret-token")
        (tmp_path / "tls").write_text("PRIVATE KEY BYTES")
        (tmp_path / "vol").write_bytes(VOLUME_KEY)
        cli("kms", "secret", "put", "api-token", "--from-file", str(tmp_path / "tok"))
        cli("kms", "secret", "put", "tls-key", "--from-file", str(tmp_path / "tls"))
        cli("kms", "secret", "put", "volume.app-data", "--from-file", str(tmp_path / "vol"))
        policy = tmp_path / "policy.toml"
        policy.write_text(
            f'allow_simulation = true\nmeasurements = ["{sig.mr_enclave.hex()}"]\n'
            '[release]\nsecrets = ["api-token", "tls-key", "volume.app-data"]\n'
        )
        cli("kms", "policy", "put", "enclave", str(policy))

        platform = SimPlatform.load(_isolated_home)
        enclave = SimIdentity(measurement=sig.mr_enclave, signer=sig.mr_signer,
                              product_id=7, svn=1, debug=False)  # fmt: skip
        device = tmp_path / "sgx_enclave"
        device.touch()
        monkeypatch.setattr(launch, "SGX_DEVICE", device)
        with sim_gramine(platform, enclave, att) as fake:
            (att / "keys").mkdir()
            (att / "keys" / KEY_NAME).touch()
            options = RunOptions(bundle=bundle, tee=TeeChoice.sgx, unsafe_any_signer=True)
            code = run_pod(options, Reporter(json_lines=True))
            assert fake.quotes_served >= 1
        captured = capfd.readouterr()
        out = captured.out
        assert code == 0, captured.err
        assert "token=s3cret-token style=plain" in out
        assert "file=PRIVATE KEY BYTES" in out and "mode=440" in out
        assert "volume-key-bytes=16" in out  # written before the workload started
        assert f"cwd={scratch}/app" in out
        written = (att / "keys" / KEY_NAME).read_bytes()
        assert written == gramine_volume_key(VOLUME_KEY, "app-data")

        # Another enclave (MRENCLAVE) is refused by the KMS: exit 13, the pod never starts.
        stranger = SimIdentity(measurement=b"\x77" * 32, signer=sig.mr_signer, product_id=7,
                               svn=1, debug=False)  # fmt: skip
        shutil.rmtree(scratch / "run")
        with sim_gramine(platform, stranger, tmp_path / "att2"):
            (tmp_path / "att2" / "keys").mkdir()
            stand_in = (
                (bin_dir / "gramine-sgx").read_text().replace(str(att), str(tmp_path / "att2"))
            )
            (bin_dir / "gramine-sgx").write_text(stand_in)
            code = run_pod(options, Reporter(json_lines=True))
        captured = capfd.readouterr()
        assert code == 13, captured.err
        assert "token=" not in captured.out and not (scratch / "run").exists()
        records = json.loads(cli("kms", "audit", "--json"))
        assert any(r["kind"].startswith("attest") and r["outcome"] == "ok" for r in records)
    finally:
        stop_server(srv)
    assert "s3cret-token" not in logs.text() and VOLUME_KEY.hex() not in logs.text()


def generate_key_rsa() -> AuthorPrivateKey:
    return generate_key(KeyType.RSA_3072)


def test_run_tee_sgx_without_gramine_is_refused(tmp_path: Path) -> None:
    from cli_process import quick_start, sealpod

    quick_start(tmp_path, pod="pod", bundle="bundle")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    result = sealpod("run", "bundle", "--tee", "sgx", "--unsafe-any-signer", cwd=tmp_path,
                     env={"PATH": f"{empty}{os.pathsep}/usr/bin:/bin"})  # fmt: skip
    assert result.returncode == 14, result.stderr
    assert "gramine-sgx is not on PATH" in result.stderr
    assert "sealpod gramine manifest" in result.stderr
