"""The runtime base's cache (mmdebstrap and pip replaced by stand-ins): built once, then
reused; a damaged cached layer is rebuilt, never trusted; the recipe is what the image needs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from sealpod.deploy import base
from sealpod.errors import ConfigError
from sealpod.rootfs.debian import DebianRootfs

pytestmark = pytest.mark.skipif(
    sys.version_info[:2] != (3, 11), reason="the bookworm base is built by Python 3.11 only"
)


@pytest.fixture
def stand_ins(monkeypatch: pytest.MonkeyPatch) -> list[DebianRootfs]:
    builds: list[DebianRootfs] = []

    def pip(args: list[str], cwd: Path) -> None:
        wheels = Path(args[args.index("--wheel-dir") + 1])
        wheels.mkdir(parents=True, exist_ok=True)
        if "--no-deps" in args:
            (wheels / "sealpod-0.1.0-py3-none-any.whl").write_bytes(b"the checkout's wheel")

    def mmdebstrap(spec: DebianRootfs, target: Path, *, log: Path | None = None) -> None:
        builds.append(spec)
        (target / "usr/local/bin").mkdir(parents=True)
        (target / "usr/local/bin/sealpod").write_text("#!/bin/sh\n")
        os.chmod(target / "usr/local/bin/sealpod", 0o755)

    monkeypatch.setattr(base, "_pip", pip)
    monkeypatch.setattr(base, "build_debian_rootfs", mmdebstrap)
    return builds


def test_built_once_then_cached(stand_ins: list[DebianRootfs], tmp_path: Path) -> None:
    first = base.ensure_runtime_base(cache_dir=tmp_path)
    second = base.ensure_runtime_base(cache_dir=tmp_path)
    assert first.built and not second.built and len(stand_ins) == 1
    assert first.diff_id == second.diff_id and first.layer == second.layer
    recipe = stand_ins[0]
    assert set(base.PACKAGES) <= set(recipe.packages)
    assert {"python3", "bubblewrap", "fuse3", "libseccomp2"} <= set(recipe.packages)
    assert any("pip install --no-index" in hook for hook in recipe.customize_hooks)


def test_a_damaged_cache_is_rebuilt(stand_ins: list[DebianRootfs], tmp_path: Path) -> None:
    first = base.ensure_runtime_base(cache_dir=tmp_path)
    with first.layer.open("r+b") as f:
        f.seek(600)
        f.write(b"X")
    again = base.ensure_runtime_base(cache_dir=tmp_path)
    assert again.built and again.diff_id == first.diff_id and len(stand_ins) == 2


def test_an_unwritable_cache_is_a_config_error(
    stand_ins: list[DebianRootfs], tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="cannot build or cache"):
        base.ensure_runtime_base(cache_dir=blocker)


def test_constraints_pin_sealpods_dependencies() -> None:
    pins = dict(line.split("==") for line in base._constraints())
    assert {"cryptography", "pydantic", "pyyaml", "pyfuse3", "psycopg"} <= set(pins)
    assert "pytest" not in pins and "sealpod" not in pins  # dev extra and itself left out
