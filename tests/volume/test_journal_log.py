"""The journal as a log of records between checkpoints (docs/volume-format.md §9-§10).

What a commit syncs, how far the journal grows, crash copies with many records pending, and
what a host that reorders, splices or swaps records gets.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from sealpod.errors import RollbackDetected, VolumeCorrupt
from sealpod.volume import MemoryFreshness, Volume, create_volume, open_volume
from sealpod.volume import commit as cm
from sealpod.volume import format as fmt
from sealpod.volume.fsck import fsck
from sealpod.volume.store import VolumeDir

from .conftest import journal_records

NODE = fmt.NODE_SIZE


def _header_counter(path: Path) -> int:
    raw = (path / "sealpod-volume").read_bytes()
    return max(fmt.HeaderSlot.from_bytes(raw[i * NODE : (i + 1) * NODE]).counter for i in (0, 1))


def _overwrite(vol: Volume, node: int) -> bytes:
    chunk = os.urandom(NODE)
    with vol.open("f", "r+b") as f:
        f.seek(node * NODE)
        f.write(chunk)
    vol.sync()
    return chunk


def _crash_copy(path: Path, dst: Path) -> Path:
    """The directory as a SIGKILL leaves it: whatever the page cache holds, nothing closed."""
    shutil.copytree(path, dst, ignore=shutil.ignore_patterns("*.lock"))
    return dst


def _overwritten(vol: Volume, nodes: int, overwrites: int) -> None:
    """``f`` of ``nodes`` committed nodes, then ``overwrites`` one-node commits over it."""
    vol.write_file("f", os.urandom(nodes * NODE))
    vol.sync()
    for i in range(overwrites):
        _overwrite(vol, i)


def test_a_commit_that_overwrites_committed_data_syncs_only_the_journal(
    vol_dir: Path, key: bytes, store: MemoryFreshness, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_volume(vol_dir, key, counter=store) as vol:
        vol.write_file("f", os.urandom(40 * NODE))
        vol.sync()
        synced: list[int] = []
        real = os.fdatasync

        def counting(fd: int) -> None:
            synced.append(fd)
            real(fd)

        monkeypatch.setattr(os, "fdatasync", counting)
        header_before = _header_counter(vol_dir)
        _overwrite(vol, 7)
        monkeypatch.setattr(os, "fdatasync", real)
        assert len(synced) == 1  # the journal record: the commit point, and nothing else
        assert _header_counter(vol_dir) == header_before  # the header waits for a checkpoint
        assert vol.counter > header_before


def test_the_journal_stays_bounded_and_checkpoints_carry_the_header_forward(
    vol_dir: Path, key: bytes, store: MemoryFreshness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cm, "CHECKPOINT_BYTES", 64 << 10)
    record = fmt.journal_record_size(4)
    with open_volume(vol_dir, key, counter=store) as vol:
        vol.write_file("f", os.urandom(100 * NODE))
        vol.sync()
        seen = set()
        for i in range(60):
            _overwrite(vol, i % 100)
            seen.add(_header_counter(vol_dir))
            size = (vol_dir / "journal").stat().st_size
            assert size <= (64 << 10) + record, f"journal grew to {size} bytes"
        assert len(seen) >= 10  # about one checkpoint per dozen commits
        assert vol.counter - _header_counter(vol_dir) < 20
        data = vol.read_file("f")
    with open_volume(vol_dir, key, counter=store, readonly=True) as vol:
        assert vol.read_file("f") == data


def test_a_crash_with_many_records_pending_opens_at_the_last_commit(
    tmp_path: Path, vol_dir: Path, key: bytes, store: MemoryFreshness
) -> None:
    with open_volume(vol_dir, key, counter=store) as vol:
        _overwritten(vol, 30, 25)
        vol.write_file("g", b"small")
        vol.sync()
        want = {"f": vol.read_file("f"), "g": vol.read_file("g")}
        last = vol.counter
        crashed = _crash_copy(vol_dir, tmp_path / "crashed")
    copy = MemoryFreshness()
    copy.values.update(store.values)
    header = _header_counter(crashed)
    assert header < last
    report = fsck(crashed, key, counter=copy)
    assert report.ok, report
    assert report.journal.startswith("pending commits ") and f"to {last} " in report.journal
    with open_volume(crashed, key, counter=copy, readonly=True) as vol:  # overlay only
        assert {n: vol.read_file(n) for n in want} == want
        assert vol.counter == last
    assert _header_counter(crashed) == header  # a read-only open wrote nothing
    with open_volume(crashed, key, counter=copy) as vol:  # replayed and checkpointed
        assert {n: vol.read_file(n) for n in want} == want
        assert vol.counter == last + 2  # the new session
    assert fsck(crashed, key, counter=copy).journal.startswith("clean")


def test_records_put_out_of_order_end_the_log_and_the_store_refuses_the_result(
    tmp_path: Path, vol_dir: Path, key: bytes, store: MemoryFreshness
) -> None:
    with open_volume(vol_dir, key, counter=store) as vol:
        _overwritten(vol, 30, 3)
        crashed = _crash_copy(vol_dir, tmp_path / "crashed")
    raw = (crashed / "journal").read_bytes()
    records = journal_records(raw)
    assert len(records) >= 4
    first, second = records[-3], records[-2]
    start = sum(r.size for r in records[:-3])
    swapped = raw[start : start + first.size]
    other = raw[start + first.size : start + first.size + second.size]
    spliced = raw[:start] + other + swapped + raw[start + first.size + second.size :]
    (crashed / "journal").write_bytes(spliced)
    before = {p.name: p.read_bytes() for p in crashed.rglob("*") if p.is_file()}
    with pytest.raises(RollbackDetected):  # the log ends before the swapped pair
        open_volume(crashed, key, counter=store)
    after = {p.name: p.read_bytes() for p in crashed.rglob("*") if p.is_file()}
    assert after == before, "a refused open wrote to the volume"


def test_another_volumes_records_are_never_replayed(
    tmp_path: Path, key: bytes, store: MemoryFreshness
) -> None:
    """Same key, another volume: the records authenticate under neither its id nor its MAC key."""
    paths = [tmp_path / "a", tmp_path / "b"]
    for path in paths:
        create_volume(path, key, counter=store)
        with open_volume(path, key, counter=store) as vol:
            vol.write_file("f", os.urandom(20 * NODE))
    with open_volume(paths[0], key, counter=store) as vol:
        want = vol.read_file("f")
    with open_volume(paths[1], key, counter=store) as vol:
        _overwrite(vol, 3)
        crashed = _crash_copy(paths[1], tmp_path / "crashed")
    (paths[0] / "journal").write_bytes((crashed / "journal").read_bytes())
    with open_volume(paths[0], key, counter=store) as vol:
        assert vol.read_file("f") == want


@pytest.mark.parametrize("how", ["unlinked", "swapped"])
def test_a_journal_taken_away_mid_session_loses_no_acknowledged_commit(
    tmp_path: Path, vol_dir: Path, key: bytes, store: MemoryFreshness, how: str
) -> None:
    """Between checkpoints the journal is the only durable copy of recent commits. When the
    host unlinks or swaps it, the next commit checkpoints first, then starts a new journal."""
    with open_volume(vol_dir, key, counter=store) as vol:
        vol.write_file("f", os.urandom(10 * NODE))
        vol.sync()
        acked = _overwrite(vol, 2)
        journal = vol_dir / "journal"
        if how == "unlinked":
            journal.unlink()
        else:
            spare = vol_dir / "journal.new"
            spare.write_bytes(os.urandom(journal.stat().st_size))
            os.replace(spare, journal)  # a regular file, another inode
        later = _overwrite(vol, 5)  # succeeds: checkpoint, then a new journal
        assert _header_counter(vol_dir) == vol.counter - 1  # the checkpoint carried the header
        crashed = _crash_copy(vol_dir, tmp_path / "crashed")
        want = vol.read_file("f")
    assert want[2 * NODE : 3 * NODE] == acked and want[5 * NODE : 6 * NODE] == later
    copy = MemoryFreshness()
    copy.values.update(store.values)
    with open_volume(crashed, key, counter=copy) as vol:
        assert vol.read_file("f") == want


def test_a_symlink_planted_as_the_journal_mid_session_is_refused_after_a_checkpoint(
    tmp_path: Path, vol_dir: Path, key: bytes, store: MemoryFreshness
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    vol = open_volume(vol_dir, key, counter=store)
    vol.write_file("f", os.urandom(10 * NODE))
    vol.sync()
    acked = vol.read_file("f")
    (vol_dir / "journal").unlink()
    (vol_dir / "journal").symlink_to(victim)
    with vol.open("f", "r+b") as f:
        f.write(b"never committed")
    with pytest.raises(VolumeCorrupt, match=r"journal.*symlink"):
        vol.sync()
    vol.close()  # broken: no final commit, and nothing written through the link
    assert victim.read_bytes() == b"keep me"
    (vol_dir / "journal").unlink()
    with open_volume(vol_dir, key, counter=store) as vol:  # the checkpoint kept the sync
        assert vol.read_file("f") == acked


def test_the_journal_is_created_with_a_durable_directory_entry(
    vol_dir: Path, key: bytes, store: MemoryFreshness, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = os.stat(vol_dir).st_ino
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        if st.st_ino == root:
            synced.append("root" if (vol_dir / "journal").exists() else "root, no journal yet")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert not (vol_dir / "journal").exists()
    with open_volume(vol_dir, key, counter=store):  # the session's commit creates it
        assert synced == ["root"]


def test_after_one_large_commit_the_journal_is_cut_and_opens_read_only_the_log(
    vol_dir: Path, key: bytes, store: MemoryFreshness, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = 6 << 20  # one record larger than CHECKPOINT_BYTES
    with open_volume(vol_dir, key, counter=store) as vol:
        vol.write_file("f", os.urandom(big))
    with open_volume(vol_dir, key, counter=store) as vol:
        vol.write_file("f", os.urandom(big))
        vol.sync()
        assert (vol_dir / "journal").stat().st_size > big  # pending until the close
    size = (vol_dir / "journal").stat().st_size
    assert size <= cm.CHECKPOINT_BYTES  # cut by the checkpoint at close
    read: list[int] = []
    real = VolumeDir.read_journal_range

    def counting(self: VolumeDir, offset: int, length: int) -> bytes:
        out = real(self, offset, length)
        read.append(len(out))
        return out

    monkeypatch.setattr(VolumeDir, "read_journal_range", counting)
    with open_volume(vol_dir, key, counter=store) as vol:
        info = vol.info()
    assert sum(read) <= 2 * fmt.JOURNAL_HEADER_SIZE + fmt.journal_record_size(0)
    assert info.storage_bytes >= size  # the journal counts
