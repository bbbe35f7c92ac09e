"""Helpers for tests that run sealed pods for real: a busybox rootfs, a bundle built from a
spec, a `sealpod kms serve --trust-sim` process on a free 127.0.0.1 port, and `sealpod run`.

Skips, with the reason, where a piece cannot exist here: no busybox (Debian
``busybox-static``), no bubblewrap, no root (volumes need FUSE and a private mount namespace),
no FUSE.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from sealpod.cli.main import app

SEALPOD = Path(sys.executable).with_name("sealpod")
BUSYBOX_TOOLS = ("sh", "cat", "id", "ls", "grep", "sleep", "echo", "env", "readlink", "touch",
                 "mkdir", "head", "wc", "od", "tr", "printf", "kill", "test", "[")  # fmt: skip


def need_sandbox() -> str:
    """bwrap and busybox paths; skip visibly without them."""
    bwrap, busybox = shutil.which("bwrap"), shutil.which("busybox")
    if bwrap is None:
        pytest.skip("bubblewrap (bwrap) is not installed (scripts/sysdeps.sh installs it)")
    if busybox is None:
        pytest.skip("busybox is not installed (scripts/sysdeps.sh installs busybox-static)")
    return busybox


def need_volumes() -> None:
    """Root and FUSE, which volumes need; skip visibly without them."""
    if os.geteuid() != 0:
        pytest.skip("volumes need root (FUSE and a private mount namespace)")
    from sealpod.volume.fuse import unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"FUSE unavailable: {reason}")


def busybox_rootfs(root: Path, scripts: dict[str, str]) -> Path:
    """A tiny rootfs: static busybox, a user ``app`` (1000:1000), ``/data`` and the given
    executable scripts (path inside the image -> text)."""
    busybox = need_sandbox()
    for d in ("bin", "etc", "data", "proc", "dev", "tmp", "run", "app"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, root / "bin" / "busybox")
    for tool in BUSYBOX_TOOLS:
        (root / "bin" / tool).symlink_to("busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0::/:/bin/sh\napp:x:1000:1000::/:/bin/sh\n")
    for path, text in scripts.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(0o755)
    return root


def cli(*args: str, code: int = 0) -> str:
    """A `sealpod` admin command in-process (fast; the server and `run` are real processes)."""
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == code, f"sealpod {' '.join(args)}: {result.output}"
    return result.output


@dataclass
class Pod:
    bundle: Path
    measurement: str
    signer: str


def build_pod(workdir: Path, spec: str, rootfs: Path, name: str = "bundle") -> Pod:
    """Sign ``spec`` (TOML; ``[image] source`` is filled in) over ``rootfs`` into a bundle."""
    key = workdir / "author.pem"
    if not key.exists():
        cli("keygen", "-o", str(key))
    spec_file = workdir / f"{name}.toml"
    spec_file.write_text(f'[image]\nsource = "{rootfs}"\n\n{spec}')
    out = workdir / name
    data = json.loads(
        cli("build", "--spec", str(spec_file), "--key", str(key), "-o", str(out), "--json")
    )
    return Pod(bundle=out, measurement=data["measurement"], signer=data["signer_id"])


@dataclass
class Kms:
    """A real `sealpod kms serve --trust-sim` process."""

    home: Path
    proc: subprocess.Popen[bytes]
    url: str
    ca: str
    identity: str
    log: Path
    policies: list[str] = field(default_factory=list)

    def put_secret(
        self, name: str, value: bytes | None = None, generate: str | None = None
    ) -> None:
        if generate is not None:
            cli("kms", "secret", "put", name, "--generate", generate)
            return
        assert value is not None
        src = self.home / f".value-{name}"
        src.write_bytes(value)
        try:
            cli("kms", "secret", "put", name, "--from-file", str(src))
        finally:
            src.unlink()

    def allow(self, pod: Pod, secrets: list[str], name: str = "pod", extra: str = "") -> None:
        """A release policy: simulated evidence of exactly ``pod`` gets ``secrets``."""
        policy = self.home / f"{name}.toml"
        policy.write_text(
            f'allow_simulation = true\nmeasurements = ["{pod.measurement}"]\n{extra}\n'
            f"[release]\nsecrets = {json.dumps(secrets)}\n"
        )
        cli("kms", "policy", "put", name, str(policy))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_kms(home: Path) -> Kms:
    """`sealpod kms init` and `sealpod kms serve --trust-sim` under ``home`` (SEALPOD_HOME)."""
    key = home / "master.key"
    cli("kms", "init", "--master-key-file", str(key))
    cli("sim", "init", "--exist-ok")
    log = home / "kms.log"
    info = home / "kms" / "server.json"
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            [str(SEALPOD), "kms", "serve", "--port", "0", "--master-key-file", str(key),
             "--trust-sim", "--no-pcs", "--no-access-log", "--log-level", "warning"],
            stdout=fh, stderr=subprocess.STDOUT, env=dict(os.environ),
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError("KMS exited:\n" + log.read_text())
        if info.is_file():
            data = json.loads(info.read_text())
            if data.get("pid") == proc.pid:
                context = ssl.create_default_context(cafile=str(data["ca"]))
                try:
                    httpx.get(f"{data['url']}/healthz", verify=context, timeout=2)
                except httpx.HTTPError:
                    time.sleep(0.05)
                    continue
                return Kms(home, proc, str(data["url"]), str(data["ca"]),
                           str(data["identity"]), log)  # fmt: skip
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("KMS did not start:\n" + log.read_text())


def run_args(pod: Pod, kms: Kms, *extra: str, kms_args: list[str] | None = None) -> list[str]:
    """`sealpod run` of ``pod`` on the simulated TEE against ``kms``, pinned both ways
    (``kms_args`` replaces ``--kms URL --kms-identity ID``)."""
    pin = ["--kms", kms.url, "--kms-identity", kms.identity] if kms_args is None else kms_args
    return [str(SEALPOD), "run", str(pod.bundle), "--tee", "sim", "--signer", pod.signer,
            *pin, *extra]  # fmt: skip


def run(pod: Pod, kms: Kms, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``pod`` to completion with JSON events; stdout is the workload's."""
    return subprocess.run(
        run_args(pod, kms, "--json", *extra),
        capture_output=True, text=True, timeout=timeout, env=dict(os.environ),
    )  # fmt: skip


def events(stderr: str) -> list[dict[str, object]]:
    """The JSON events `sealpod run --json` wrote (the workload's own stderr lines skipped)."""
    out = []
    for line in stderr.splitlines():
        if line.startswith('{"'):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def phase(stderr: str, name: str) -> dict[str, object]:
    found = [e for e in events(stderr) if e.get("event") == "phase" and e.get("phase") == name]
    assert found, f"no {name} phase event in:\n{stderr}"
    return found[-1]


@pytest.fixture(name="kms")
def kms_fixture(_isolated_home: Path) -> Iterator[Kms]:
    """A real `sealpod kms serve --trust-sim` on 127.0.0.1 for one test (skips without bwrap);
    a test module that imports it gets the fixture ``kms``."""
    need_sandbox()
    server = start_kms(_isolated_home)
    try:
        yield server
    finally:
        server.stop()


def workload_pid(tree: list[int]) -> int:
    """The workload: pid 2 of the sandbox's pid namespace (bwrap's reaper is pid 1)."""
    for pid in tree:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        nspids = next(line for line in status.splitlines() if line.startswith("NSpid:"))
        if nspids.split()[1:] == [str(pid), "2"]:
            return pid
    raise AssertionError(f"no workload among {tree}")


def descendants(root: int) -> list[int]:
    """``root`` and every process below it, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def mounted(vdir: Path) -> bool:
    """Whether a FUSE view of a volume under ``vdir`` is in this (the host's) mount table."""
    return f"sealpod:{vdir}" in Path("/proc/self/mounts").read_text()
