"""``sealpod image`` for real: the Debian runtime base built with mmdebstrap from this checkout,
the same digest twice, ``podman load`` of both archive formats, and a sealed pod that starts
from the image under podman, attests to a KMS on 127.0.0.1, serves, and keeps its data on an
encrypted volume bind-mounted from the host.

The base takes a minute or two to build the first time; the module shares one cache for all
its tests. podman runs rootful with a private store, ``runtime = "runc"`` and lowered ulimits
from a containers.conf the test writes, ``--network host`` (never podman's bridge), and only the
capabilities in :data:`sealpod.deploy.container.SANDBOX_CAPABILITIES` plus ``/dev/fuse``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cli_process import quick_start, sealpod
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from podman_env import Podman, open_podman

from sealpod.deploy import container as ct

pytestmark = pytest.mark.slow
SEALPOD = Path(sys.executable).with_name("sealpod")


def _needs_image_tools() -> None:
    if shutil.which("mmdebstrap") is None:
        pytest.skip("mmdebstrap is not installed (scripts/sysdeps.sh installs it on Debian)")
    if sys.version_info[:2] != (3, 11):
        pytest.skip("the bookworm runtime base needs wheels built by Python 3.11")
    if os.geteuid() != 0:
        pytest.skip("mmdebstrap builds the runtime base as root here")


@pytest.fixture(scope="module")
def image_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SEALPOD_HOME for the module: the runtime base is built once and cached there."""
    _needs_image_tools()
    return tmp_path_factory.mktemp("image-home")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("image")
    quick_start(work, pod="demo", bundle="bundle")
    return work


def image(work: Path, home: Path, *args: str | Path) -> dict[str, object]:
    # Not cli_process.sealpod: its 2-minute limit is shorter than a first base build.
    result = subprocess.run(
        [str(SEALPOD), "image", *map(str, args), "--json"],
        cwd=work, env={**os.environ, "SEALPOD_HOME": str(home)},
        capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    assert isinstance(report, dict) and report["ok"] is True
    return report


@pytest.fixture(scope="module")
def built(work: Path, image_home: Path) -> dict[str, object]:
    return image(work, image_home, "bundle", "-o", "demo.tar", "--tag", "demo:1")


@pytest.mark.timeout(1200)
def test_same_inputs_same_digest(work: Path, image_home: Path, built: dict[str, object]) -> None:
    again = image(work, image_home, "bundle", "-o", "again.tar", "--tag", "demo:1")
    assert again["base_cached"] is True
    assert again["manifest_digest"] == built["manifest_digest"]
    assert again["image_id"] == built["image_id"]
    digest = [
        hashlib.sha256((work / n).read_bytes()).hexdigest() for n in ("demo.tar", "again.tar")
    ]
    assert digest[0] == digest[1]
    assert (
        built["measurement"]
        == json.loads(sealpod("inspect", "bundle", "--json", cwd=work).stdout)["measurement"]
    )


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    engine = open_podman(tmp_path_factory.mktemp("podman"))
    try:
        yield engine
    finally:
        engine.close()


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("fmt", ["oci", "docker"])
def test_podman_loads_and_runs_it(
    work: Path, image_home: Path, built: dict[str, object], podman: Podman, fmt: str
) -> None:
    tag = f"demo:{fmt}"
    report = image(work, image_home, "bundle", "-o", f"{fmt}.tar", "--format", fmt, "--tag", tag)
    loaded = podman.run("load", "--input", str(work / f"{fmt}.tar"))
    assert tag in loaded.stdout + loaded.stderr
    inspect = json.loads(podman.run("image", "inspect", f"localhost/{tag}").stdout)[0]
    assert inspect["Id"] == str(report["image_id"]).split(":")[1]
    config = inspect["Config"]
    assert config["Entrypoint"] == list(ct.ENTRYPOINT)
    assert config["Labels"][ct.LABEL_MEASUREMENT] == report["measurement"]
    assert config["Labels"][ct.LABEL_SIGNER] == report["signer_id"]
    # The bundle inside verifies, with the sealpod the base installed.
    verified = podman.run(
        "run", "--rm", "--network", "host", "--cap-drop", "ALL", "--read-only",
        "--entrypoint", "sealpod", f"localhost/{tag}",
        "verify-bundle", ct.BUNDLE_PATH, "--signer", str(report["signer_id"]), "--json",
    )  # fmt: skip
    assert json.loads(verified.stdout)["measurement"] == report["measurement"]
    tools = podman.run(
        "run", "--rm", "--network", "host", "--entrypoint", "sh", f"localhost/{tag}",
        "-c", "command -v bwrap fusermount3 && python3 -c 'import pyfuse3, psycopg'",
    )  # fmt: skip
    assert "/usr/bin/bwrap" in tools.stdout


@pytest.mark.timeout(1200)
def test_kms_image_runs_as_the_kms_deployment_does(
    work: Path, image_home: Path, built: dict[str, object], podman: Podman
) -> None:
    """`sealpod image --base`: the KMS's image, run as deploy/kubernetes runs it (uid 10001,
    read-only root, no capabilities, writable only /tmp and $SEALPOD_HOME)."""
    refused = sealpod("image", "bundle", "--base", "-o", "x.tar", cwd=work)
    assert refused.returncode == 2 and "not both" in refused.stderr
    report = image(work, image_home, "--base", "-o", "sealpod.tar", "--tag", "sealpod:test")
    assert report["measurement"] is None and len(report["layers"]) == 1  # type: ignore[arg-type]
    podman.run("load", "--input", str(work / "sealpod.tar"))
    migrated = podman.run(
        "run", "--rm", "--network", "host", "--user", "10001:10001", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", "--read-only",
        "--tmpfs", "/tmp:mode=1777", "--tmpfs", f"{ct.SEALPOD_HOME}:mode=1777",
        "localhost/sealpod:test", "kms", "migrate", "--db", "sqlite:////tmp/kms.db", "--json",
    )  # fmt: skip
    assert json.loads(migrated.stdout)["ok"] is True


# -- a sealed pod from the image, under podman ---------------------------------------------------
APP = """\
import http.server, os
GREETING = os.environ["GREETING"]
COUNT = "/data/count"

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        n = int(open(COUNT).read()) + 1 if os.path.exists(COUNT) else 1
        with open(COUNT, "w") as f:
            f.write(str(n)); f.flush(); os.fsync(f.fileno())
        body = f"{GREETING} {n}".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)

http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""
GREETING = "sealed-hello-5d1c"


def _runtime_landed() -> bool:
    probe = subprocess.run([str(SEALPOD), "run", "--help"], capture_output=True, check=False)
    return probe.returncode == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _base_rootfs(home: Path, dest: Path) -> None:
    """The pod's own rootfs: a copy of the runtime base (it has python3), from the cache."""
    (layer,) = (home / "cache" / "runtime-base").glob("*/layer.tar")
    with tarfile.open(layer) as tf:
        tf.extractall(dest, filter="fully_trusted")  # our own cached layer


def _kms_identity(cert_pem: Path) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


@pytest.mark.timeout(1200)
def test_sealed_pod_runs_under_podman(
    work: Path, image_home: Path, built: dict[str, object], podman: Podman, tmp_path: Path
) -> None:
    if not _runtime_landed():
        pytest.skip("`sealpod run` (the image's entrypoint) is not in this checkout yet")
    if not Path("/dev/fuse").exists():
        pytest.skip("/dev/fuse is absent: the encrypted volume cannot be mounted")
    env = {"SEALPOD_HOME": str(image_home)}
    app_port, kms_port = _free_port(), _free_port()

    # The KMS on 127.0.0.1, trusting this machine's simulated platform.
    sealpod("sim", "init", cwd=work, env=env)
    assert sealpod("kms", "init", cwd=work, env=env).returncode == 0
    log = (tmp_path / "kms.log").open("wb")
    kms = subprocess.Popen(
        [str(SEALPOD), "kms", "serve", "--port", str(kms_port), "--trust-sim", "--no-pcs"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env},
    )  # fmt: skip
    try:
        info = image_home / "kms" / "server.json"
        deadline = time.monotonic() + 60
        while not (info.is_file() and json.loads(info.read_text()).get("pid") == kms.pid):
            assert time.monotonic() < deadline and kms.poll() is None, "KMS did not start"
            time.sleep(0.1)
        ca = Path(json.loads(info.read_text())["ca"])
        identity = _kms_identity(ca)

        # The pod: python3 serving a greeting (a KMS secret) and a counter on its volume.
        pod = tmp_path / "pod"
        _base_rootfs(image_home, pod / "rootfs")
        (pod / "rootfs" / "app").mkdir()
        (pod / "rootfs" / "app" / "serve.py").write_text(APP)
        (pod / "rootfs" / "data").mkdir(exist_ok=True)
        (pod / "sealpod.toml").write_text(
            '[image]\nsource = "rootfs"\n'
            '[process]\nentrypoint = "/usr/bin/python3"\nargs = ["/app/serve.py"]\n'
            'user = "1000:1000"\n'
            f'[process.env]\nPORT = "{app_port}"\nGREETING = {{ secret = "greeting" }}\n'
            '[[volumes]]\npath = "/data"\nname = "data"\n'
            f'[runtime]\nready_tcp = "127.0.0.1:{app_port}"\n'
            '[tee]\nbackends = ["sim"]\n'
            "[identity]\nproduct_id = 7\nsvn = 1\n"
            f'[kms]\nurl = "https://127.0.0.1:{kms_port}"\nidentity = "{identity}"\n'
        )
        built_pod = sealpod("build", "--spec", pod / "sealpod.toml", "--key", "k.pem",
                            "-o", pod / "bundle", cwd=work, env=env)  # fmt: skip
        assert built_pod.returncode == 0, built_pod.stderr
        measurement = json.loads(sealpod("inspect", pod / "bundle", "--json", cwd=work).stdout)[
            "measurement"
        ]
        greeting_file = tmp_path / "greeting.txt"
        greeting_file.write_text(GREETING)
        for args in (
            ("kms", "secret", "put", "greeting", "--from-file", str(greeting_file)),
            ("kms", "secret", "put", "volume.data", "--generate", "bytes:32"),
        ):
            assert sealpod(*args, cwd=work, env=env).returncode == 0
        policy = tmp_path / "policy.toml"
        policy.write_text(
            f'allow_simulation = true\nmeasurements = ["{measurement}"]\n'
            '[release]\nsecrets = ["greeting", "volume.data"]\n'
        )
        assert (
            sealpod("kms", "policy", "put", "pod", str(policy), cwd=work, env=env).returncode == 0
        )
        pod_image = image(work, image_home, pod / "bundle", "-o", pod / "image.tar",
                          "--tag", "sealed-pod:1")  # fmt: skip
        podman.run("load", "--input", str(pod / "image.tar"))

        volumes = tmp_path / "volumes"
        volumes.mkdir()
        run_args = [
            "run", "--rm", "--detach", "--name", "sealed-pod",
            "--network", "host",
            "--cap-drop", "ALL",
            *[arg for cap in ct.SANDBOX_CAPABILITIES for arg in ("--cap-add", cap)],
            *[arg for opt in ct.PODMAN_SECURITY_OPTS for arg in ("--security-opt", opt)],
            "--device", ct.FUSE_DEVICE,
            "--read-only", "--tmpfs", "/tmp", "--tmpfs", ct.SEALPOD_HOME,
            "--volume", f"{volumes}:{ct.VOLUME_DIR}",
            "--volume", f"{image_home / 'sim'}:{ct.SEALPOD_HOME}/sim:ro",
            "localhost/sealed-pod:1",
            "--signer", str(pod_image["signer_id"]), "--tee", "sim", "--network", "host",
            "--volume-dir", ct.VOLUME_DIR, "--json",
        ]  # fmt: skip

        def serve_once() -> str:
            podman.run(*run_args)
            try:
                deadline = time.monotonic() + 120
                while True:
                    try:
                        return httpx.get(f"http://127.0.0.1:{app_port}/", timeout=2).text
                    except httpx.HTTPError:
                        state = podman.run("inspect", "sealed-pod", check=False)
                        logs = podman.run("logs", "sealed-pod", check=False)
                        assert state.returncode == 0, "the pod exited:\n" + logs.stderr
                        assert time.monotonic() < deadline, "not serving:\n" + logs.stderr
                        time.sleep(0.5)
            finally:
                podman.run("stop", "--time", "10", "sealed-pod", check=False)

        assert serve_once() == f"{GREETING} 1"
        assert serve_once() == f"{GREETING} 2"  # the volume kept the count across restarts
        stored = b"".join(p.read_bytes() for p in volumes.rglob("*") if p.is_file())
        assert stored and GREETING.encode() not in stored  # only ciphertext on the host
    finally:
        kms.terminate()
        kms.wait(timeout=30)
        log.close()
