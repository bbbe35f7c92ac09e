"""Format versions (docs/volume-format.md §13): version 2 writes the journal as a log; version 1
volumes (one-commit journal) are read, upgraded in both header slots at the first writable
open, and refused while they hold a commit older code left unfinished."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import pytest

from sealpod.errors import VolumeFormatError
from sealpod.volume import MemoryFreshness, create_volume, open_volume
from sealpod.volume import commit as cm
from sealpod.volume import format as fmt
from sealpod.volume.crypt import derive_kek, wrap_volume_key
from sealpod.volume.store import VolumeDir

SLOT = fmt.HEADER_SLOT_SIZE


def _slot_versions(path: Path) -> list[int]:
    raw = (path / "sealpod-volume").read_bytes()
    return [
        fmt.HeaderSlot.from_bytes(raw[i * SLOT : (i + 1) * SLOT]).format_version for i in (0, 1)
    ]


def _as_version_1(path: Path, key: bytes) -> cm.Header:
    """Rewrite both header slots as version 1 (same state, key wrapped under v1's AAD), as a
    volume that older code closed cleanly."""
    vdir = VolumeDir(path)
    try:
        header, volume_key = cm.read_header(vdir, key)
        salt, nonce = os.urandom(fmt.SALT_SIZE), os.urandom(fmt.NONCE_SIZE)
        draft = dataclasses.replace(
            header.slot, format_version=1, kdf_salt=salt, wrap_nonce=nonce, mac=bytes(32)
        )
        kek = derive_kek(key, kdf_id=draft.kdf_id, salt=salt, volume_id=draft.volume_id)
        sealed = wrap_volume_key(kek, volume_key, nonce=nonce, aad=draft.wrap_aad())
        v1 = dataclasses.replace(
            draft, wrapped_key=sealed[: fmt.KEY_SIZE], wrap_tag=sealed[fmt.KEY_SIZE :]
        )
        v1 = cm.seal_header(header.keys, v1)
        for position in (0, 1):
            vdir.write_header_slot(position, v1.to_bytes())
        return cm.Header(slot=v1, position=0, keys=header.keys)
    finally:
        vdir.close()


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file() and not p.name.endswith(".lock"):
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def _v1_volume(path: Path, data: bytes) -> tuple[bytes, MemoryFreshness, cm.Header]:
    """A volume holding ``f`` = ``data``, then rewritten as version 1: its key, counter store
    and header."""
    key, store = os.urandom(32), MemoryFreshness()
    create_volume(path, key, counter=store)
    with open_volume(path, key, counter=store) as vol:
        vol.write_file("f", data)
    return key, store, _as_version_1(path, key)


def test_new_volumes_are_version_2_in_both_slots(tmp_path: Path) -> None:
    key, store = os.urandom(32), MemoryFreshness()
    create_volume(tmp_path / "v", key, counter=store)
    assert _slot_versions(tmp_path / "v") == [2, 2]


def test_a_version_1_volume_reads_and_is_upgraded_in_both_slots_by_a_writable_open(
    tmp_path: Path,
) -> None:
    path, data = tmp_path / "v", os.urandom(50_000)
    key, store, _ = _v1_volume(path, data)
    assert _slot_versions(path) == [1, 1]
    with open_volume(path, key, counter=store, readonly=True) as vol:
        assert vol.read_file("f") == data and vol.info().format_version == 1
    assert _slot_versions(path) == [1, 1]  # a read-only open changes nothing
    with open_volume(path, key, counter=store) as vol:
        assert vol.read_file("f") == data
    # Both slots, so that code knowing only version 1 refuses the volume as a format.
    assert _slot_versions(path) == [2, 2]
    with open_volume(path, key, counter=store, readonly=True) as vol:
        assert vol.read_file("f") == data and vol.info().format_version == 2


def test_a_version_1_volume_with_an_unfinished_commit_is_refused_untouched(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v"
    key, store, header = _v1_volume(path, os.urandom(50_000))
    # Version 1's journal: magic, version 1, 6 zero, volume id, counter, 24 zero, entries...
    v1 = fmt.JOURNAL_MAGIC + (1).to_bytes(2, "little") + bytes(6) + header.slot.volume_id
    v1 += (header.counter + 1).to_bytes(8, "little") + bytes(24) + os.urandom(4128 + 96)
    (path / "journal").write_bytes(v1)
    before = _digest(path)
    for readonly in (True, False):
        with pytest.raises(VolumeFormatError, match="unfinished commit"):
            open_volume(path, key, counter=store, readonly=readonly)
    assert _digest(path) == before
    # One already applied (its counter is the header's) is only a stale journal.
    stale = v1[:32] + header.counter.to_bytes(8, "little") + v1[40:]
    (path / "journal").write_bytes(stale)
    with open_volume(path, key, counter=store) as vol:
        assert len(vol.read_file("f")) == 50_000


def test_an_unknown_version_is_a_format_error(tmp_path: Path) -> None:
    key, store = os.urandom(32), MemoryFreshness()
    path = tmp_path / "v"
    create_volume(path, key, counter=store)
    raw = bytearray((path / "sealpod-volume").read_bytes())
    for position in (0, 1):
        raw[position * SLOT + 8 : position * SLOT + 10] = (3).to_bytes(2, "little")
    (path / "sealpod-volume").write_bytes(bytes(raw))
    with pytest.raises(VolumeFormatError, match="format_version is 3"):
        open_volume(path, key, counter=store, readonly=True)
