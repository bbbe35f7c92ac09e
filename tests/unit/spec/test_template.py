"""write_example: the sample spec and rootfs, written with fixed modes, never clobbering."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sealpod.errors import ConfigError
from sealpod.spec.load import load_spec
from sealpod.spec.template import write_example


def test_writes_a_valid_spec_and_rootfs(tmp_path: Path) -> None:
    written = write_example(tmp_path / "demo")
    spec = load_spec(tmp_path / "demo" / "sealpod.toml")
    root = tmp_path / "demo" / "rootfs"
    assert (root / spec.process.entrypoint.lstrip("/")).is_file()
    assert os.readlink(root / "app/bin/hi") == "hello"
    assert stat.S_IMODE((root / "app/bin/hello").stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "app/etc/greeting.conf").stat().st_mode) == 0o644
    assert (root / "data").is_dir() and not any((root / "data").iterdir())
    assert tmp_path / "demo" / "sealpod.toml" in written


def test_modes_do_not_depend_on_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_example(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "rootfs/app/README.txt").stat().st_mode) == 0o644


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    write_example(tmp_path)
    with pytest.raises(ConfigError, match="already exists"):
        write_example(tmp_path)


def test_force_overwrites(tmp_path: Path) -> None:
    write_example(tmp_path)
    (tmp_path / "sealpod.toml").write_text("garbage")
    write_example(tmp_path, force=True)
    assert load_spec(tmp_path / "sealpod.toml").identity.svn == 1
