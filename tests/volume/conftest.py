"""Fixtures for volume tests: a key, a counter store, and a factory for populated volumes."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import sealpod.volume.volume as volume_module
from sealpod.errors import VolumeCorrupt
from sealpod.volume import MemoryFreshness, Volume, create_volume, open_volume
from sealpod.volume import format as fmt


def journal_records(raw: bytes) -> list[fmt.Journal]:
    """The well-formed records of a journal file from offset 0, up to the first that is not
    (MACs and base counters unchecked: stale records of earlier rounds are included)."""
    records: list[fmt.Journal] = []
    offset = 0
    while True:
        try:
            record = fmt.Journal.record_at(raw, offset)
        except VolumeCorrupt:
            return records
        records.append(record)
        offset += record.size


class Clock:
    """The rollback window's clock, moved by hand. Steps are best binary fractions (0.0625),
    so that sums compare exactly."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(volume_module, "_now", fake)
    return fake


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def store() -> MemoryFreshness:
    return MemoryFreshness()


@pytest.fixture
def vol_dir(tmp_path: Path, key: bytes, store: MemoryFreshness) -> Path:
    """An empty, freshly created volume."""
    path = tmp_path / "vol"
    create_volume(path, key, counter=store)
    return path


OpenVolume = Callable[..., Volume]


@pytest.fixture
def open_vol(vol_dir: Path, key: bytes, store: MemoryFreshness) -> Iterator[OpenVolume]:
    """Open the fixture volume (closing every handle at teardown)."""
    opened: list[Volume] = []

    def _open(
        *, readonly: bool = False, cache_bytes: int = 64 << 20, dirty_bytes: int = 64 << 20
    ) -> Volume:
        vol = open_volume(
            vol_dir,
            key,
            counter=store,
            readonly=readonly,
            cache_bytes=cache_bytes,
            dirty_bytes=dirty_bytes,
        )
        opened.append(vol)
        return vol

    yield _open
    for vol in opened:
        try:
            vol.close()
        except Exception:
            pass
