"""The journal's records, which a checkpoint leaves in place and the next round writes over
(docs/volume-format.md §9-§10).

Torn-record images, restored headers with the kept journal, rekey, fsck, and the order of
journal replay against the counter check at a writable open.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from pathlib import Path

import pytest

from sealpod.errors import RollbackDetected, VolumeCorrupt
from sealpod.volume import MemoryFreshness, Volume, create_volume, open_volume
from sealpod.volume import format as fmt
from sealpod.volume.fsck import fsck

from .conftest import journal_records

NODE = fmt.NODE_SIZE
PAGE = 4096


def _digest(path: Path) -> dict[str, str]:
    out = {}
    for p in sorted(path.rglob("*")):
        if p.is_file() and not p.name.endswith(".lock"):
            out[str(p.relative_to(path))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _snapshot(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.lock"))


def _restore(snap: Path, path: Path) -> None:
    shutil.rmtree(path)
    shutil.copytree(snap, path)


# --- 1. torn journal over the kept one: every crash image opens at the old or the new state ---
def _overwrite(vol: Volume, data: bytearray, nodes: list[int]) -> None:
    with vol.open("f", "r+b") as f:
        for i in nodes:
            chunk = os.urandom(NODE)
            data[i * NODE : (i + 1) * NODE] = chunk
            f.seek(i * NODE)
            f.write(chunk)
    vol.sync()


def _images(ja: bytes, jb: bytes, rng: random.Random) -> list[bytes]:
    """What the journal file can hold after a crash while it changes from ``ja`` to ``jb``
    (pwrite, fdatasync): any mix of pages, with the file at the old length, the new length, or
    (when longer) extended over unwritten zeros; and, for a file cut short, a cut at any point."""
    la, lb = len(ja), len(jb)
    out: list[bytes] = []
    for k in sorted({*range(0, lb + 1, 512), lb}):
        out.append(jb[:k] + ja[k:])  # pwrite reached k, file not cut
        if lb > la:
            tail = ja[k:la] if k < la else b""
            out.append((jb[:k] + tail).ljust(lb, b"\0"))  # size extended, data not all there
        if lb < la:
            out.append(jb[:k] + ja[k:lb])  # cut reached the disk, data only to k
    pages = (max(la, lb) + PAGE - 1) // PAGE
    for size in {la, lb}:
        for _ in range(40):
            mix = bytearray(ja.ljust(size, b"\0")[:size])
            for p in range(pages):
                if rng.random() < 0.5:
                    mix[p * PAGE : (p + 1) * PAGE] = jb[p * PAGE : (p + 1) * PAGE]
            out.append(bytes(mix[:size]))
    return out


@pytest.mark.parametrize(("first", "second"), [(6, 6), (10, 3), (3, 10)])
def test_every_torn_journal_image_opens_at_the_old_or_the_new_state(
    tmp_path: Path, first: int, second: int
) -> None:
    key, store = os.urandom(32), MemoryFreshness()
    path, snap = tmp_path / "vol", tmp_path / "snap"
    vid = create_volume(path, key, counter=store)
    data = bytearray(os.urandom(60 * NODE))
    with open_volume(path, key, counter=store) as vol:
        vol.write_file("f", bytes(data))
        vol.sync()
        _overwrite(vol, data, list(range(2, 2 + first)))
        ja, state_a, counter_a = (path / "journal").read_bytes(), bytes(data), vol.counter
        _snapshot(path, snap)
        _overwrite(vol, data, list(range(20, 20 + second)))
        jb, state_b = (path / "journal").read_bytes(), bytes(data)
    assert journal_records(ja)[-1].counter == counter_a
    assert jb.startswith(ja) and journal_records(jb)[-1].counter > counter_a  # appended
    rng = random.Random(1)
    for image in _images(ja, jb, rng):
        for readonly in (True, False):
            _restore(snap, path)
            (path / "journal").write_bytes(image)
            store.values[vid] = counter_a
            with open_volume(path, key, counter=store, readonly=readonly) as vol:
                got = vol.read_file("f")
            assert got == (state_b if image == jb else state_a)


# --- 2. an old header put back with the kept journal ------------------------------------------
def test_old_header_and_old_files_with_the_kept_journal_never_read_as_a_mix(
    tmp_path: Path,
) -> None:
    """The host keeps the last commit's journal J and puts back header and files of an earlier
    commit H < J - 1. Replaying J over H can only give J (files J did not touch are still H's and
    are refused), never a state the volume did not commit."""
    key, store = os.urandom(32), MemoryFreshness()
    path, snap = tmp_path / "vol", tmp_path / "snap"
    create_volume(path, key, counter=store)
    with open_volume(path, key, counter=store) as vol:
        vol.write_file("a", os.urandom(50_000))
        vol.write_file("b", os.urandom(50_000))
        vol.sync()
        _snapshot(path, snap)  # H
        vol.write_file("a", os.urandom(50_000))  # H+1: only a
        vol.sync()
        vol.write_file("b", os.urandom(50_000))  # J: only b
        vol.sync()
        state = {n: vol.read_file(n) for n in ("a", "b")}
    journal = (path / "journal").read_bytes()
    for readonly in (True, False):
        _restore(snap, path)
        (path / "journal").write_bytes(journal)
        try:
            with open_volume(path, key, counter=store, readonly=readonly) as vol:
                for name in ("a", "b"):
                    try:
                        assert vol.read_file(name) == state[name]
                    except VolumeCorrupt:
                        pass
        except (VolumeCorrupt, RollbackDetected):
            pass


def test_kept_journal_cannot_bring_back_a_header_older_than_the_store(tmp_path: Path) -> None:
    """After a session start (+2, no journal) the kept journal is behind the store."""
    key, store = os.urandom(32), MemoryFreshness()
    path = tmp_path / "vol"
    create_volume(path, key, counter=store)
    with open_volume(path, key, counter=store) as vol:
        vol.write_file("f", b"one" * 5000)
    old_header = (path / "sealpod-volume").read_bytes()
    with open_volume(path, key, counter=store) as vol:
        vol.write_file("f", b"two" * 5000)
    journal = (path / "journal").read_bytes()
    with open_volume(path, key, counter=store):  # session start only
        pass
    (path / "sealpod-volume").write_bytes(old_header)
    (path / "journal").write_bytes(journal)  # as if the unsynced clear at open was lost
    for readonly in (True, False):
        with pytest.raises(RollbackDetected):
            open_volume(path, key, counter=store, readonly=readonly)


# --- 3. a writable open that is refused must not write -----------------------------------------
def test_refused_writable_open_leaves_the_volume_untouched(tmp_path: Path) -> None:
    """The host puts back an old header with a later (kept) journal. The open is refused, and it
    checks the counter store before it replays anything: had it replayed first, it would have
    written the old journal's nodes over the current files, a header slot and an empty journal
    before refusing."""
    key, store = os.urandom(32), MemoryFreshness()
    path = tmp_path / "vol"
    create_volume(path, key, counter=store)
    with open_volume(path, key, counter=store) as vol:
        vol.write_file("f", os.urandom(100_000))
    old_header = (path / "sealpod-volume").read_bytes()
    with open_volume(path, key, counter=store) as vol:
        vol.write_file("f", os.urandom(100_000))
    old_journal = (path / "journal").read_bytes()  # kept by the commit, stale
    with open_volume(path, key, counter=store) as vol:
        vol.write_file("f", os.urandom(100_000))
        current = vol.read_file("f")
    real_header, real_journal = (
        (path / "sealpod-volume").read_bytes(),
        (path / "journal").read_bytes(),
    )
    (path / "sealpod-volume").write_bytes(old_header)
    (path / "journal").write_bytes(old_journal)
    before = _digest(path)
    with pytest.raises(RollbackDetected):
        open_volume(path, key, counter=store)
    assert _digest(path) == before, "a refused open wrote to the volume"
    # The host puts the real header and journal back: the volume is as it was.
    (path / "sealpod-volume").write_bytes(real_header)
    (path / "journal").write_bytes(real_journal)
    with open_volume(path, key, counter=store, readonly=True) as vol:
        assert vol.read_file("f") == current


# --- 4. rekey and the kept journal ------------------------------------------------------------
def test_rekey_old_key_with_old_header_and_kept_journal(tmp_path: Path) -> None:
    """Rekey leaves the last commit's journal (its MAC key comes from the unchanged volume key).
    The old key with an old header is refused once the store is past the journal."""
    key, new_key, store = os.urandom(32), os.urandom(32), MemoryFreshness()
    path = tmp_path / "vol"
    create_volume(path, key, counter=store)
    with open_volume(path, key, counter=store) as vol:
        vol.write_file("f", os.urandom(50_000))
    old_header = (path / "sealpod-volume").read_bytes()
    with open_volume(path, key, counter=store) as vol:
        vol.write_file("f", os.urandom(50_000))
        vol.rekey(new_key)
    journal = (path / "journal").read_bytes()
    assert journal_records(journal)  # kept through the rekey
    with pytest.raises(VolumeCorrupt):
        open_volume(path, key, counter=store, readonly=True)
    (path / "sealpod-volume").write_bytes(old_header)
    with pytest.raises(RollbackDetected):
        open_volume(path, key, counter=store, readonly=True)


def test_fsck_after_rekey_reports_the_kept_journal_as_clean(tmp_path: Path) -> None:
    """A rekey commits (+1) without a journal: the last commit's journal stays, one behind the
    header. Nothing was interrupted, yet fsck calls it 'stale or interrupted' (before 745984a
    the journal was emptied and fsck said 'clean')."""
    key, new_key, store = os.urandom(32), os.urandom(32), MemoryFreshness()
    path = tmp_path / "vol"
    create_volume(path, key, counter=store)
    with open_volume(path, key, counter=store) as vol:
        vol.write_file("f", os.urandom(50_000))
        vol.sync()
        vol.write_file("f", os.urandom(50_000))
        vol.rekey(new_key)
    report = fsck(path, new_key, counter=store)
    assert report.ok
    assert report.journal.startswith("clean"), report.journal
