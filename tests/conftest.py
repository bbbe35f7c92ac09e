"""Shared fixtures: isolated SEALPOD_HOME for every test, the shared vectors folder."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VECTORS = Path(os.environ.get("SEALPOD_VECTORS", REPO.parent / "shared" / "vectors"))


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test gets its own SEALPOD_HOME so no test sees another's state or the user's."""
    home = tmp_path_factory.mktemp("sealpod-home")
    old = os.environ.get("SEALPOD_HOME")
    os.environ["SEALPOD_HOME"] = str(home)
    try:
        yield home
    finally:
        if old is None:
            os.environ.pop("SEALPOD_HOME", None)
        else:
            os.environ["SEALPOD_HOME"] = old


@pytest.fixture(scope="session")
def vectors() -> Path:
    """The real-hardware conformance vectors; skip visibly when the folder is absent."""
    if not (VECTORS / "README.md").is_file():
        pytest.skip(f"conformance vectors not found at {VECTORS} (../shared/vectors is absent)")
    return VECTORS


def service_up(host: str, port: int) -> bool:
    """True when something accepts TCP connections at host:port (loopback services only)."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def third_party_vector(*parts: str) -> Path:
    """A public third-party test file (RA-TLS certificates, a SIGSTRUCT) under
    ``../shared/vectors/third-party/``: never committed here (docs/ratls.md and docs/sgx.md list
    each file's source); skip visibly when it is absent."""
    path = VECTORS.joinpath("third-party", *parts)
    if not path.is_file():
        pytest.skip(f"third-party vector {'/'.join(parts)} not found under {VECTORS}/third-party")
    return path


def modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code`` (import-cost checks that
    look at ``sys.modules``, never at timings)."""
    report = "import json as _j, sys as _s\nprint(_j.dumps(sorted(_s.modules)))"
    # Without proxy variables: with one, the KMS clients use httpx's own transports on purpose
    # (sealpod.kms.transport.sync_client), and a runner that sets one would fail these checks.
    proxies = {"http_proxy", "https_proxy", "all_proxy"}
    env = {k: v for k, v in os.environ.items() if k.lower() not in proxies}
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\n{report}"],
        capture_output=True, text=True, timeout=60, check=True, env=env,
    )  # fmt: skip
    return set(json.loads(done.stdout.splitlines()[-1]))
