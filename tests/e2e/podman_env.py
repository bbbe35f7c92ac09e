"""podman for the e2e tests: a private store, ``runtime = "runc"`` and ulimits this machine
allows (written to a ``containers.conf`` named by ``CONTAINERS_CONF``), never podman's default
bridge network, and a visible skip where podman cannot run."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True, slots=True)
class Podman:
    root: Path
    env: dict[str, str]

    def argv(self, *args: str) -> list[str]:
        return [
            "podman",
            "--root", str(self.root / "storage"),
            "--runroot", str(self.root / "run"),
            "--storage-driver", "overlay",
            *args,
        ]  # fmt: skip

    def run(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.argv(*args),
            env=self.env,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
        if check:
            assert result.returncode == 0, f"podman {' '.join(args)}: {result.stderr}"
        return result

    def close(self) -> None:
        self.run("rm", "--all", "--force", "--time", "0", check=False)
        self.run("rmi", "--all", "--force", check=False)
        self.run("system", "reset", "--force", check=False, timeout=120)
        shutil.rmtree(self.root, ignore_errors=True)


def _limit(kind: int, want: int) -> str:
    _soft, hard = resource.getrlimit(kind)
    cap = hard if hard != resource.RLIM_INFINITY else want
    value = min(want, cap)
    return f"{value}:{value}"


def open_podman(root: Path) -> Podman:
    """A podman with its own store under ``root``; skips the test where podman cannot run."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (scripts/sysdeps.sh installs it on Debian)")
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed (scripts/sysdeps.sh installs it on Debian)")
    if os.geteuid() != 0:
        pytest.skip("the podman tests run rootful (they need /dev/fuse and real capabilities)")
    root.mkdir(parents=True, exist_ok=True)
    conf = root / "containers.conf"
    # runc, not crun (crun does not work on this machine's kernel); ulimits no higher than
    # this process's, because a container cannot raise them (runc fails with EPERM).
    conf.write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={_limit(resource.RLIMIT_NOFILE, 4096)}",'
        f' "nproc={_limit(resource.RLIMIT_NPROC, 4096)}"]\n'
        '[engine]\nruntime = "runc"\n',
        encoding="utf-8",
    )
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    podman = Podman(root, env)
    probe = podman.run("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"podman cannot run here: {probe.stderr.strip()[-300:]}")
    return podman
