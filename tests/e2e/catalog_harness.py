"""Helpers for the catalog's end-to-end tests: build an entry (mmdebstrap rootfs, cached across
runs), put its secrets and its own sample policy into a real KMS, run it with
`sealpod run --tee sim --network host`, wait for the ready event, stop it with SIGTERM.

Skips, with the reason, only where a piece cannot exist here: no mmdebstrap, no bubblewrap, no
root or FUSE (the entries keep their data on encrypted volumes).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from pod_harness import Kms, Pod, cli, need_volumes, run_args

from sealpod.build.keys import generate_key
from sealpod.catalog.build import CatalogBuild, build_entry
from sealpod.catalog.model import resolve_params
from sealpod.catalog.recipes import get_recipe

REPO = Path(__file__).resolve().parents[2]
#: The mmdebstrap rootfs cache, shared by test runs (a first build takes 20 s to a few minutes).
CACHE = Path(os.environ.get("SEALPOD_CATALOG_CACHE", REPO / ".venv" / "catalog-cache"))


def need_catalog() -> None:
    """mmdebstrap, bubblewrap, root and FUSE; skip visibly without them."""
    if shutil.which("mmdebstrap") is None:
        pytest.skip("mmdebstrap is not installed (scripts/sysdeps.sh installs it)")
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not installed (scripts/sysdeps.sh installs it)")
    need_volumes()


@dataclass
class Entry:
    """A built catalog entry and the KMS it is provisioned from."""

    name: str
    build: CatalogBuild
    pod: Pod
    kms: Kms
    ca_file: Path
    policy_name: str

    def secret(self, name: str) -> str:
        """A secret's value, read from the KMS as its owner would."""
        return cli("kms", "secret", "get", name).rstrip("\n")

    @property
    def volume_dir(self) -> Path:
        home = Path(os.environ["SEALPOD_HOME"])
        return home / "volumes" / self.build.layout.volumes[0][0]


def build_and_provision(
    tmp_path: Path, kms: Kms, name: str, settings: list[str] | None = None,
    image: Path | None = None,
) -> Entry:  # fmt: skip
    """Build ``name``, create its secrets in ``kms`` and put its sample policy there."""
    need_catalog()
    recipe = get_recipe(name)
    values = resolve_params(recipe, settings or [])
    built = build_entry(
        recipe, values, tmp_path / name, cache_dir=CACHE, image=image,
        key=generate_key(), signed_at=datetime.now(UTC),
    )  # fmt: skip
    assert built.bundle is not None
    for need in built.layout.secrets:
        dns = [arg for d in need.dns for arg in ("--dns", d)]
        cli("kms", "secret", "put", need.name, "--generate", need.generate, *dns)
    policy_name = f"catalog-{name}"
    cli("kms", "policy", "put", policy_name, str(built.policy_path))
    ca_file = tmp_path / "kms-ca.pem"
    context = ssl.create_default_context(cafile=kms.ca)
    ca_file.write_text(httpx.get(f"{kms.url}/v1/ca", verify=context, timeout=10).text)
    pod = Pod(
        bundle=built.bundle.path,
        measurement=built.bundle.measurement.hex(),
        signer=built.bundle.signer_id.hex(),
    )
    return Entry(name, built, pod, kms, ca_file, policy_name)


@dataclass
class Running:
    """A `sealpod run` process and its JSON events (read by a thread)."""

    proc: subprocess.Popen[str]
    events: list[dict[str, object]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    ready_after: float | None = None
    reader: threading.Thread | None = None

    def stop(self, timeout: float = 120) -> int:
        """SIGTERM (forwarded to the service, which flushes its data), then the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("the pod did not stop on SIGTERM:\n" + self.log()) from None
        finally:
            if self.reader is not None:
                self.reader.join(timeout=10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    def log(self) -> str:
        return "\n".join(self.lines[-60:])


def start(entry: Entry, timeout: float = 240) -> Running:
    """`sealpod run` the entry and wait for its ready event (the service's port answers)."""
    argv = run_args(entry.pod, entry.kms, "--network", "host", "--json",
                    "--ready-timeout", str(int(timeout)))  # fmt: skip
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ)
    )
    running = Running(proc)
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            running.lines.append(line.rstrip("\n"))
            if line.startswith('{"'):
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                running.events.append(event)
                if event.get("phase") == "ready" and event.get("outcome") == "ok":
                    running.ready_after = time.monotonic() - started
                    ready.set()
                if event.get("event") == "exit":
                    ready.set()
        ready.set()

    running.reader = threading.Thread(target=read, daemon=True)
    running.reader.start()
    ready.wait(timeout)
    if running.ready_after is None:
        running.stop(timeout=30) if proc.poll() is None else None
        raise AssertionError(f"{entry.name} did not become ready:\n{running.log()}")
    return running


def run_refused(entry: Entry) -> subprocess.CompletedProcess[str]:
    """`sealpod run` to completion (for pods the KMS must refuse)."""
    return subprocess.run(
        run_args(entry.pod, entry.kms, "--network", "host", "--json"),
        capture_output=True, text=True, timeout=180, env=dict(os.environ),
    )  # fmt: skip


def plaintext_hits(root: Path, needle: bytes) -> list[str]:
    """Files under ``root`` that contain ``needle`` (no links followed)."""
    hits = []
    for dirpath, _dirs, files in os.walk(root):
        for fname in files:
            path = Path(dirpath) / fname
            if path.is_symlink() or not path.is_file():
                continue
            if needle in path.read_bytes():
                hits.append(str(path))
    return hits
