"""Host tampering, in the spirit of Gramine's pf_tamper: every case is refused with a typed error.

The host can truncate, flip, swap, rename, delete and restore any byte of the volume directory.
Per-file tampering must fail with ``VolumeCorrupt`` when the file is read (the library), which
the FUSE adapter turns into EIO (see test_fuse.py); whole-volume rollback must fail at open with
``RollbackDetected``. A wrong key is indistinguishable from tampering: also ``VolumeCorrupt``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sealpod.errors import RollbackDetected, VolumeCorrupt, VolumeError
from sealpod.volume import MemoryFreshness, create_volume, open_volume
from sealpod.volume import format as fmt

from .conftest import journal_records

NODE = fmt.NODE_SIZE
CONTENT = {
    "small.txt": b"inline content " * 10,
    "medium.bin": os.urandom(100_000),  # one MHT node, 25 data nodes
    "big.bin": os.urandom(800 * NODE + 123),  # 11 MHT nodes: MHT 0 has child MHT nodes
    "dir/other.bin": os.urandom(100_000),
}


@dataclass
class Vol:
    path: Path
    key: bytes
    store: MemoryFreshness

    def host(self, logical: str) -> Path:
        """The host file holding ``logical`` (or the index for "<index>")."""
        with open_volume(self.path, self.key, counter=self.store, readonly=True) as vol:
            if logical == "<index>":
                fid = vol._header.slot.index_file_id
            else:
                fid = vol.index.inodes[vol.stat(logical).ino].file_id
        return self.path / "files" / fid.hex()

    def read_all(self) -> None:
        with open_volume(self.path, self.key, counter=self.store, readonly=True) as vol:
            for name, data in CONTENT.items():
                assert vol.read_file(name) == data

    def refused(self, error: type[Exception] = VolumeCorrupt) -> Exception:
        with pytest.raises(error) as info:
            self.read_all()
        assert type(info.value) is error, repr(info.value)
        return info.value

    def current_header_slot(self) -> int:
        raw = (self.path / "sealpod-volume").read_bytes()
        counters = [
            fmt.HeaderSlot.from_bytes(raw[i * 4096 : (i + 1) * 4096]).counter for i in (0, 1)
        ]
        return 0 if counters[0] >= counters[1] else 1


@pytest.fixture
def vol(tmp_path: Path) -> Vol:
    key, store = os.urandom(32), MemoryFreshness()
    path = tmp_path / "vol"
    create_volume(path, key, counter=store)
    with open_volume(path, key, counter=store) as v:
        v.mkdir("dir")
        for name, data in CONTENT.items():
            v.write_file(name, data)
    result = Vol(path, key, store)
    result.read_all()
    return result


@dataclass
class Saved:
    path: Path
    data: bytes

    def restore(self) -> None:
        self.path.write_bytes(self.data)


@pytest.fixture
def saved() -> Iterator[list[Saved]]:
    items: list[Saved] = []
    yield items


def flip(path: Path, offset: int, mask: int = 0x01) -> bytes:
    raw = bytearray(path.read_bytes())
    original = bytes(raw)
    raw[offset] ^= mask
    path.write_bytes(raw)
    return original


# --- truncation ------------------------------------------------------------------------------
def test_truncate_data_file_at_every_node_boundary(vol: Vol) -> None:
    for name in ("medium.bin", "big.bin"):
        host = vol.host(name)
        original = host.read_bytes()
        slots = len(original) // NODE
        for cut in sorted({k * NODE for k in range(slots)} | {NODE // 2, len(original) - 1}):
            host.write_bytes(original[:cut])
            vol.refused()
        host.write_bytes(original)
    vol.read_all()


def test_truncate_inline_file(vol: Vol) -> None:
    host = vol.host("small.txt")
    original = host.read_bytes()
    for cut in (0, 64, 4080, 4095):
        host.write_bytes(original[:cut])
        vol.refused()


def test_truncate_index_at_every_boundary(vol: Vol) -> None:
    host = vol.host("<index>")
    original = host.read_bytes()
    for cut in range(0, len(original), 512):
        host.write_bytes(original[:cut])
        with pytest.raises(VolumeCorrupt):
            vol.read_all()


def test_truncate_header_file(vol: Vol) -> None:
    header = vol.path / "sealpod-volume"
    original = header.read_bytes()
    for cut in (0, 8, 4095, 4096, 4097, 8191):
        header.write_bytes(original[:cut])
        with pytest.raises((VolumeCorrupt, VolumeError)):
            vol.read_all()


# --- byte flips --------------------------------------------------------------------------------
def test_flip_every_byte_of_the_current_header_slot(vol: Vol) -> None:
    """Each field, MAC, wrap nonce and tag byte, and the zero padding: the damaged slot is
    rejected; the older slot that remains is behind the counter store -> rollback refused.
    (Without the last commit's journal, which would restore the slot: see the next test.)"""
    header = vol.path / "sealpod-volume"
    (vol.path / "journal").write_bytes(b"")
    base = vol.current_header_slot() * 4096
    for offset in [*list(range(fmt.HEADER_USED_SIZE)), 300, 2000, 4095]:
        original = flip(header, base + offset)
        with pytest.raises((VolumeCorrupt, RollbackDetected)):
            vol.read_all()
        header.write_bytes(original)
    vol.read_all()


def test_a_damaged_current_header_slot_is_restored_by_its_commits_journal(vol: Vol) -> None:
    """A checkpoint leaves the journal's records in place. While they are there, a damaged
    current slot looks like a header write torn by a crash: the records, which authenticate and
    chain on from the older slot, are replayed and the volume opens at its latest state."""
    header = vol.path / "sealpod-volume"
    journal = vol.path / "journal"
    current = vol.current_header_slot()
    raw = header.read_bytes()
    before = fmt.HeaderSlot.from_bytes(raw[current * 4096 : (current + 1) * 4096])
    older = fmt.HeaderSlot.from_bytes(raw[(1 - current) * 4096 : (2 - current) * 4096])
    records = journal_records(journal.read_bytes())
    assert records[0].base == older.counter
    assert before.counter in {r.counter for r in records}
    flip(header, current * 4096 + fmt.HEADER_MAC_OFFSET)
    vol.read_all()  # read-only: the journal is an overlay
    with open_volume(vol.path, vol.key, counter=vol.store) as v:  # writable: replayed
        assert v.counter > before.counter  # and a new session began on top of it
    vol.read_all()


def test_flip_stale_header_slot_is_harmless_and_healed(vol: Vol) -> None:
    """The other slot holds the previous commit; damaging it cannot change what is read, and
    the next commit overwrites it."""
    header = vol.path / "sealpod-volume"
    stale = (1 - vol.current_header_slot()) * 4096
    flip(header, stale + fmt.HEADER_MAC_OFFSET)
    vol.read_all()
    with open_volume(vol.path, vol.key, counter=vol.store) as v:
        v.write_file("small.txt", CONTENT["small.txt"])
    raw = header.read_bytes()
    for i in (0, 1):
        fmt.HeaderSlot.from_bytes(raw[i * 4096 : (i + 1) * 4096])


def test_flip_every_metadata_header_and_tag_byte(vol: Vol) -> None:
    for name in ("small.txt", "big.bin"):
        host = vol.host(name)
        offsets = list(range(fmt.META_HEADER_SIZE)) + list(range(fmt.META_TAG_OFFSET, NODE))
        offsets += list(range(fmt.META_HEADER_SIZE, fmt.META_TAG_OFFSET, 97))
        for offset in offsets:
            original = flip(host, offset)
            vol.refused()
            host.write_bytes(original)
    vol.read_all()


def test_flip_mht_node_bytes(vol: Vol) -> None:
    """MHT nodes hold each child's key and tag; any flipped byte breaks the node's own tag."""
    host = vol.host("big.bin")
    for j in (0, 1, 10):
        base = fmt.mht_slot(j) * NODE
        for offset in [0, 1, 47, 48, 2000, 4079, 4080, 4095]:
            original = flip(host, base + offset)
            vol.refused()
            host.write_bytes(original)
    vol.read_all()


def test_flip_data_node_bytes(vol: Vol) -> None:
    host = vol.host("big.bin")
    for i in (0, 75, 76, 799):
        for offset in (0, 2048, 4095):
            original = flip(host, fmt.data_slot(i) * NODE + offset, 0x80)
            vol.refused()
            host.write_bytes(original)
    vol.read_all()


def test_flip_index_bytes(vol: Vol) -> None:
    host = vol.host("<index>")
    for offset in list(range(0, 64)) + list(range(64, NODE, 211)):
        original = flip(host, offset)
        with pytest.raises(VolumeCorrupt):
            vol.read_all()
        host.write_bytes(original)
    vol.read_all()


# --- swapping, moving, deleting ----------------------------------------------------------------
def _swap_slots(path_a: Path, slot_a: int, path_b: Path, slot_b: int) -> None:
    a, b = bytearray(path_a.read_bytes()), bytearray(path_b.read_bytes())
    node_a = bytes(a[slot_a * NODE : (slot_a + 1) * NODE])
    node_b = bytes(b[slot_b * NODE : (slot_b + 1) * NODE])
    if path_a == path_b:
        a[slot_a * NODE : (slot_a + 1) * NODE] = node_b
        a[slot_b * NODE : (slot_b + 1) * NODE] = node_a
        path_a.write_bytes(a)
        return
    a[slot_a * NODE : (slot_a + 1) * NODE] = node_b
    b[slot_b * NODE : (slot_b + 1) * NODE] = node_a
    path_a.write_bytes(a)
    path_b.write_bytes(b)


def test_swap_data_nodes_within_a_file(vol: Vol) -> None:
    host = vol.host("big.bin")
    _swap_slots(host, fmt.data_slot(3), host, fmt.data_slot(4))
    vol.refused()


def test_swap_data_nodes_under_different_mht_nodes(vol: Vol) -> None:
    host = vol.host("big.bin")
    _swap_slots(host, fmt.data_slot(3), host, fmt.data_slot(3 + fmt.DATA_PER_MHT))
    vol.refused()


def test_swap_mht_nodes_within_a_file(vol: Vol) -> None:
    host = vol.host("big.bin")
    _swap_slots(host, fmt.mht_slot(1), host, fmt.mht_slot(2))
    vol.refused()


def test_swap_mht_node_with_data_node(vol: Vol) -> None:
    host = vol.host("big.bin")
    _swap_slots(host, fmt.mht_slot(0), host, fmt.data_slot(0))
    vol.refused()


def test_swap_nodes_across_files(vol: Vol) -> None:
    _swap_slots(
        vol.host("medium.bin"), fmt.data_slot(2), vol.host("dir/other.bin"), fmt.data_slot(2)
    )
    vol.refused()


def test_swap_metadata_nodes_across_files(vol: Vol) -> None:
    _swap_slots(vol.host("medium.bin"), 0, vol.host("dir/other.bin"), 0)
    vol.refused()


def test_swap_two_files_on_the_host(vol: Vol) -> None:
    a, b = vol.host("medium.bin"), vol.host("dir/other.bin")
    tmp = a.with_name("tmp")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    vol.refused()


def test_copy_one_file_over_another(vol: Vol) -> None:
    shutil.copyfile(vol.host("medium.bin"), vol.host("dir/other.bin"))
    vol.refused()


def test_rename_a_file_on_the_host(vol: Vol) -> None:
    host = vol.host("medium.bin")
    host.rename(host.with_name("0" * 32))
    vol.refused()


def test_delete_a_file_on_the_host(vol: Vol) -> None:
    vol.host("dir/other.bin").unlink()
    vol.refused()


def test_delete_the_index(vol: Vol) -> None:
    vol.host("<index>").unlink()
    with pytest.raises(VolumeCorrupt):
        vol.read_all()


def test_appended_garbage_is_ignored(vol: Vol) -> None:
    """Slots beyond a file's committed tree are crash leftovers by design; they are never read."""
    host = vol.host("medium.bin")
    with host.open("ab") as f:
        f.write(os.urandom(3 * NODE))
    vol.read_all()


# --- rollback ----------------------------------------------------------------------------------
def _commit_change(vol: Vol, name: str, data: bytes) -> None:
    with open_volume(vol.path, vol.key, counter=vol.store) as v:
        v.write_file(name, data)
    CONTENT[name] = data


@pytest.fixture
def restore_content() -> Iterator[None]:
    before = dict(CONTENT)
    yield
    CONTENT.clear()
    CONTENT.update(before)


@pytest.mark.usefixtures("restore_content")
def test_restore_old_copy_of_a_file(vol: Vol) -> None:
    host = vol.host("medium.bin")
    old = host.read_bytes()
    _commit_change(vol, "medium.bin", os.urandom(100_000))
    host.write_bytes(old)
    vol.refused()


@pytest.mark.usefixtures("restore_content")
def test_restore_old_metadata_node_only(vol: Vol) -> None:
    host = vol.host("medium.bin")
    old_meta = host.read_bytes()[:NODE]
    _commit_change(vol, "medium.bin", os.urandom(100_000))
    raw = bytearray(host.read_bytes())
    raw[:NODE] = old_meta
    host.write_bytes(raw)
    vol.refused()


@pytest.mark.usefixtures("restore_content")
def test_restore_old_data_node_only(vol: Vol) -> None:
    host = vol.host("big.bin")
    slot = fmt.data_slot(5)
    old = host.read_bytes()[slot * NODE : (slot + 1) * NODE]
    new = bytearray(CONTENT["big.bin"])
    new[5 * NODE : 5 * NODE + 10] = b"0123456789"
    _commit_change(vol, "big.bin", bytes(new))
    raw = bytearray(host.read_bytes())
    raw[slot * NODE : (slot + 1) * NODE] = old
    host.write_bytes(raw)
    vol.refused()


@pytest.mark.usefixtures("restore_content")
def test_restore_old_copy_of_the_index(vol: Vol) -> None:
    host = vol.host("<index>")
    old = host.read_bytes()
    _commit_change(vol, "small.txt", b"changed")
    host.write_bytes(old)
    with pytest.raises(VolumeCorrupt):
        vol.read_all()


@pytest.mark.usefixtures("restore_content")
def test_restore_old_copy_of_the_whole_volume(vol: Vol, tmp_path: Path) -> None:
    """Rollback across restarts: a complete, self-consistent old copy is caught by the counter."""
    snapshot = tmp_path / "snapshot"
    shutil.copytree(vol.path, snapshot)
    _commit_change(vol, "small.txt", b"newer")
    shutil.rmtree(vol.path)
    shutil.copytree(snapshot, vol.path)
    vol.refused(RollbackDetected)
    with pytest.raises(RollbackDetected):
        open_volume(vol.path, vol.key, counter=vol.store)


@pytest.mark.usefixtures("restore_content")
def test_restore_old_header_only(vol: Vol) -> None:
    header = vol.path / "sealpod-volume"
    old = header.read_bytes()
    _commit_change(vol, "small.txt", b"newer")
    header.write_bytes(old)
    # The last commit's journal, left in place, carries the volume to its latest state again:
    # what is read is the newest content, not a rollback.
    vol.read_all()
    (vol.path / "journal").write_bytes(b"")
    vol.refused(RollbackDetected)


@pytest.mark.usefixtures("restore_content")
def test_replay_an_old_committed_journal(
    vol: Vol, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A journal captured from an earlier commit, put back with the header of its time."""
    snapshot = tmp_path / "snap"
    shutil.copytree(vol.path, snapshot)
    _commit_change(vol, "medium.bin", os.urandom(100_000))
    committed = (vol.path / "journal").read_bytes()  # left in place, stale, by the commit
    assert committed
    _commit_change(vol, "medium.bin", os.urandom(100_000))
    (vol.path / "sealpod-volume").write_bytes((snapshot / "sealpod-volume").read_bytes())
    (vol.path / "journal").write_bytes(committed)
    with pytest.raises((RollbackDetected, VolumeCorrupt)):
        vol.read_all()


def test_wrong_key_looks_like_tampering(vol: Vol) -> None:
    with pytest.raises(VolumeCorrupt) as info:
        open_volume(vol.path, os.urandom(32), counter=vol.store, readonly=True)
    assert "wrong key" in str(info.value)
