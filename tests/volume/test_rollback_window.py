"""The rollback window: commits that return before the freshness store records them.

With a window of W seconds the store is caught up by the first commit, or the first
``catch_up_counter()``, at least W/2 after the first commit it lacks; ``close()`` always catches
it up. Without a window (the default) every commit waits for the store.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pytest

from sealpod.errors import ConfigError, RollbackDetected, VolumeError
from sealpod.volume import MemoryFreshness, create_volume, open_volume

from .conftest import Clock


def _new(tmp_path: Path) -> tuple[Path, bytes, MemoryFreshness, str]:
    key, store = os.urandom(32), MemoryFreshness()
    path = tmp_path / "vol"
    vid = create_volume(path, key, counter=store)
    return path, key, store, vid


def test_without_a_window_every_commit_waits_for_the_store(tmp_path: Path) -> None:
    path, key, store, vid = _new(tmp_path)
    with open_volume(path, key, counter=store) as vol:
        for n in range(3):
            vol.write_file("f", b"x" * n)
            vol.sync()
            assert store.values[vid] == vol.counter
            assert vol.counter_lag == 0


def test_the_store_lags_within_half_a_window_then_catches_up(tmp_path: Path, clock: Clock) -> None:
    path, key, store, vid = _new(tmp_path)
    with open_volume(path, key, counter=store, rollback_window=0.25) as vol:
        opened = vol.counter
        assert store.values[vid] == opened  # the session's first commit is always recorded
        vol.write_file("f", b"one")
        vol.sync()
        clock.now += 0.0625
        vol.write_file("f", b"two")
        vol.sync()
        assert store.values[vid] == opened
        assert vol.counter_lag == vol.counter - opened == 2
        vol.catch_up_counter()  # a quarter window after the first unrecorded commit: not yet
        assert store.values[vid] == opened
        clock.now += 0.0625  # half the window since that commit
        vol.catch_up_counter()
        assert store.values[vid] == vol.counter
        assert vol.counter_lag == 0
        # A commit after half a window records itself, and everything before it.
        vol.write_file("f", b"three")
        vol.sync()
        clock.now += 0.125
        vol.write_file("f", b"four")
        vol.sync()
        assert store.values[vid] == vol.counter


def test_close_records_what_the_window_held_back(tmp_path: Path, clock: Clock) -> None:
    path, key, store, vid = _new(tmp_path)
    vol = open_volume(path, key, counter=store, rollback_window=10)
    vol.write_file("f", b"data")
    vol.sync()
    assert vol.counter_lag == 1
    vol.close()
    with open_volume(path, key, counter=store, readonly=True) as ro:
        assert store.values[vid] == ro.counter
        assert ro.read_file("f") == b"data"


def test_a_copy_older_than_the_store_is_still_refused(tmp_path: Path, clock: Clock) -> None:
    path, key, store, _ = _new(tmp_path)
    with open_volume(path, key, counter=store, rollback_window=0.25) as vol:
        vol.write_file("f", b"old")
        vol.sync()
    shutil.copytree(path, tmp_path / "copy")
    with open_volume(path, key, counter=store, rollback_window=0.25) as vol:
        vol.write_file("f", b"new")
        vol.sync()
        clock.now += 0.125
        vol.catch_up_counter()
    shutil.rmtree(path)
    shutil.copytree(tmp_path / "copy", path)
    with pytest.raises(RollbackDetected):
        open_volume(path, key, counter=store)


def test_a_copy_from_inside_the_window_is_what_the_window_gives_up(
    tmp_path: Path, clock: Clock
) -> None:
    """The documented cost: while the store lags, a copy of the volume taken inside the window
    opens without complaint after the process dies (here: its descriptors are dropped)."""
    path, key, store, _ = _new(tmp_path)
    vol = open_volume(path, key, counter=store, rollback_window=10)
    vol.write_file("f", b"first")
    vol.sync()
    shutil.copytree(path, tmp_path / "copy")
    vol.write_file("f", b"second, synced")
    vol.sync()
    vol._vdir.close()  # the process is killed: no final commit, no catch-up
    shutil.rmtree(path)
    shutil.copytree(tmp_path / "copy", path)
    with open_volume(path, key, counter=store) as rolled_back:
        assert rolled_back.read_file("f") == b"first"


def test_a_store_that_fails_to_catch_up_breaks_the_volume(tmp_path: Path, clock: Clock) -> None:
    path, key, store, _ = _new(tmp_path)
    vol = open_volume(path, key, counter=store, rollback_window=0.25)
    try:
        vol.write_file("f", b"x")
        vol.sync()
        clock.now += 0.125

        def unreachable(volume_id: str, expected_old: int, new: int) -> None:
            raise VolumeError("the KMS does not answer")

        store.advance = unreachable  # type: ignore[method-assign]
        with pytest.raises(VolumeError, match="does not answer"):
            vol.catch_up_counter()
        assert vol.broken
        with pytest.raises(VolumeError, match="unusable"):
            vol.write_file("g", b"y")
    finally:
        vol.close()


@pytest.mark.parametrize("window", [-1.0, 60.5, math.nan, math.inf])
def test_a_window_out_of_range_is_refused_before_opening(tmp_path: Path, window: float) -> None:
    path, key, store, _ = _new(tmp_path)
    with pytest.raises(ConfigError, match="rollback window"):
        open_volume(path, key, counter=store, rollback_window=window)
    with open_volume(path, key, counter=store) as vol:  # not locked by the refused open
        assert vol.counter > 0
