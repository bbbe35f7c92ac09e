"""Power loss, not only SIGKILL: acknowledged writes survive a crash at any sync point.

The model: a write not followed by an fdatasync/fsync of its file (or a syncfs) may be lost,
4 KiB block by block, and so may a file whose directory entry was never synced; synced bytes
are kept. Images are built from a shadow copy of what was last synced, mixed per block with
what the page cache holds, at random points just before and after every sync of six sessions
of random operations (writes, truncates, replace-by-rename, unlinks, rekeys), with small and
default checkpoint and dirty-memory limits; each image is opened read-only or writable and
must equal the state after some prefix of the operations no shorter than the last
acknowledged ``sync()``. A checkpoint that does not sync the files its records touched fails
here within seconds. (Written by a review of the journal-as-a-log change.)
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

import sealpod.volume.commit as commit_module
import sealpod.volume.store as store_module
import sealpod.volume.volume as volume_module
from sealpod.errors import VolumeCorrupt
from sealpod.volume import MemoryFreshness, create_volume, open_volume

from .test_crash import State, _apply_model, _apply_volume, _digest, _make_ops

BLOCK = 4096


class PowerLoss:
    """Tracks, for every file of one volume directory, the bytes last made durable."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root.resolve()
        self.durable: dict[str, bytes] = {}
        self.on_crash_point: Callable[[], None] | None = None
        self.quiet = 0
        self.snapshot_all()
        mp = monkeypatch
        orig_fdatasync = os.fdatasync
        orig_fsync = os.fsync
        orig_syncfs = store_module.syncfs
        pl = self

        def fdatasync(fd: int) -> None:
            pl.crash_point()  # the write before it may be torn: unsynced blocks mix
            orig_fdatasync(fd)
            pl.capture_fd(fd)
            pl.crash_point()

        def fsync(fd: int) -> None:
            pl.crash_point()
            orig_fsync(fd)
            pl.capture_fd(fd)
            pl.crash_point()

        def syncfs(fd: int) -> None:
            pl.crash_point()
            orig_syncfs(fd)
            pl.snapshot_all()
            pl.crash_point()

        mp.setattr(os, "fdatasync", fdatasync)
        mp.setattr(os, "fsync", fsync)
        mp.setattr(store_module, "syncfs", syncfs)
        mp.setattr(commit_module, "syncfs", syncfs)
        mp.setattr(volume_module, "syncfs", syncfs)

    def _mine(self, path: Path) -> str | None:
        try:
            rel = path.resolve().relative_to(self.root)
        except ValueError:
            return None
        return str(rel)

    def capture_path(self, path: Path) -> None:
        if self.quiet or not path.is_file():
            return
        rel = self._mine(path)
        if rel is not None:
            self.durable[rel] = path.read_bytes()

    def capture_fd(self, fd: int) -> None:
        if self.quiet:
            return
        self.capture_path(Path(os.readlink(f"/proc/self/fd/{fd}")))

    def snapshot_all(self) -> None:
        if self.quiet:
            return
        for p in self.root.rglob("*"):
            if p.is_file() and not p.name.endswith(".lock"):
                self.durable[str(p.relative_to(self.root))] = p.read_bytes()

    def crash_point(self) -> None:
        if self.quiet or self.on_crash_point is None:
            return
        self.quiet += 1
        try:
            self.on_crash_point()
        finally:
            self.quiet -= 1

    def image(self, dst: Path, rng: random.Random, keep: float) -> None:
        """A power-loss image: durable bytes, each unsynced 4 KiB block kept with ``keep``."""
        if dst.exists():
            shutil.rmtree(dst)
        (dst / "files").mkdir(parents=True)
        current: dict[str, bytes] = {}
        for p in self.root.rglob("*"):
            if p.is_file() and not p.name.endswith(".lock"):
                current[str(p.relative_to(self.root))] = p.read_bytes()
        for rel in set(self.durable) | set(current):
            old = self.durable.get(rel)
            new = current.get(rel)
            if old is None:
                continue  # never synced: its directory entry may be lost too
            if new is None:  # unlinked since: the unlink may be lost
                out = old if rng.random() < 0.5 else None
            else:
                size = len(new) if rng.random() < keep else len(old)
                buf = bytearray(size)
                for off in range(0, size, BLOCK):
                    src = new if rng.random() < keep else old
                    chunk = src[off : off + BLOCK]
                    if len(chunk) < min(BLOCK, size - off):
                        other = old if src is new else new
                        chunk = other[off : off + BLOCK]
                    buf[off : off + len(chunk)] = chunk
                out = bytes(buf)
            if out is not None:
                (dst / rel).write_bytes(out)


def _read_all(
    path: Path, key: bytes, store: MemoryFreshness, readonly: bool, keys: Sequence[bytes] = ()
) -> State:
    """Every file of the volume, opened with ``key`` or (for an image from before a rekey)
    one of the older ``keys``."""
    out: State = {}
    candidates = (key, *keys)
    vol = None
    for n, k in enumerate(candidates):
        try:
            vol = open_volume(path, k, counter=store, readonly=readonly)
            break
        except VolumeCorrupt:
            if n == len(candidates) - 1:
                raise
    assert vol is not None
    with vol:
        for name, st in vol.walk():
            if st.is_file:
                out[name] = vol.read_file(name)
    return out


@pytest.mark.parametrize(
    ("seed", "checkpoint_bytes", "dirty_bytes"),
    [(1, 4 << 20, 64 << 20), (2, 40_000, 64 << 20), (3, 40_000, 200_000), (4, 4 << 20, 200_000)],
)
def test_power_loss_at_any_sync_point_keeps_acknowledged_writes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    seed: int,
    checkpoint_bytes: int,
    dirty_bytes: int,
) -> None:
    monkeypatch.setattr(commit_module, "CHECKPOINT_BYTES", checkpoint_bytes)
    rng = random.Random(seed)
    key, store = os.urandom(32), MemoryFreshness()
    path = tmp_path / "vol"
    create_volume(path, key, counter=store)
    with open_volume(path, key, counter=store) as vol:
        vol.mkdir("d")
    pl = PowerLoss(path, monkeypatch)
    state: State = {}
    old_keys: list[bytes] = []
    failures: list[str] = []
    # What the crash-point check needs of the running session (it runs inside its syncs).
    now: dict[str, int] = {"session": 0, "first_valid": 0, "upto": 0, "checks": 0}
    digests: list[str] = []
    keys = [key]

    def check() -> None:
        if rng.random() > 0.25:
            return
        now["checks"] += 1
        img = tmp_path / "img"
        pl.image(img, rng, keep=rng.choice([0.0, 0.3, 0.7]))
        copy = MemoryFreshness()
        copy.values.update(store.values)
        lo, hi, where = now["first_valid"], now["upto"], f"session {now['session']}"
        try:
            got = _read_all(img, keys[0], copy, readonly=rng.random() < 0.5, keys=old_keys)
        except Exception as exc:
            failures.append(f"{where} ops {lo}..{hi}: {type(exc).__name__}: {exc}")
            return
        if _digest(got) not in digests[lo : hi + 1]:
            failures.append(f"{where} ops {lo}..{hi}: state is not a valid prefix")

    for session in range(6):
        ops = _make_ops(rng, 120)
        digests[:] = [_digest(state)]
        model = dict(state)
        for op in ops:
            _apply_model(model, op)
            digests.append(_digest(model))
        now.update(session=session, first_valid=0, upto=0)
        pl.on_crash_point = check
        vol = open_volume(path, keys[0], counter=store, dirty_bytes=dirty_bytes)
        work = dict(state)
        for n, op in enumerate(ops):
            now["upto"] = n + 1
            if n % 37 == 36:  # a rekey now and then (it commits first)
                new_key = os.urandom(32)
                old_keys.insert(0, keys[0])
                keys[0] = new_key
                vol.rekey(new_key)
            _apply_volume(vol, work, op)
            if op[0] == "sync":
                now["first_valid"] = n + 1
            if failures:
                break
        if failures:
            vol.close()
            break
        if session % 2:
            vol.close()
            now["first_valid"] = len(ops)
            pl.on_crash_point = None
            state = work
        else:  # power loss at the end of the session: continue from a crash image
            pl.on_crash_point = None
            img = tmp_path / "crashed"
            pl.image(img, rng, keep=0.0)
            vol._vdir.close()  # drop the lock without checkpointing (the process died)
            shutil.rmtree(path)
            shutil.copytree(img, path)
            pl.durable.clear()
            pl.snapshot_all()
            state = _read_all(path, keys[0], store, readonly=True)
            assert _digest(state) in digests[now["first_valid"] :]
    assert not failures, failures[:5]
    assert now["checks"] > 20
