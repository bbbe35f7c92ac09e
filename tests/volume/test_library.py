"""The volume library as a program uses it: files, directories, persistence, limits."""

from __future__ import annotations

import errno
import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from sealpod.errors import RollbackDetected, VolumeCorrupt, VolumeError, VolumeFormatError
from sealpod.volume import MemoryFreshness, Volume, create_volume, open_volume
from sealpod.volume import format as fmt

OpenVolume = Callable[..., Volume]


def test_write_read_roundtrip_persists_across_reopen(open_vol: OpenVolume) -> None:
    vol = open_vol()
    vol.write_file("a.txt", b"hello")
    vol.mkdir("d/e", parents=True)
    big = os.urandom(300_000)
    vol.write_file("d/e/big.bin", big)
    vol.close()
    vol = open_vol()
    assert vol.read_file("a.txt") == b"hello"
    assert vol.read_file("d/e/big.bin") == big
    assert vol.listdir() == ["a.txt", "d"]
    assert vol.listdir("d") == ["e"]
    st = vol.stat("d/e/big.bin")
    assert st.is_file and st.size == len(big)
    assert vol.stat("d").is_dir


def test_close_commits_and_unsynced_changes_are_not_lost_on_close(open_vol: OpenVolume) -> None:
    vol = open_vol()
    with vol.open("f", "wb") as f:
        f.write(b"x" * 10)
    vol.close()
    assert open_vol().read_file("f") == b"x" * 10


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_reads_and_writes_match_a_model(open_vol: OpenVolume, seed: int) -> None:
    """Random pwrite/truncate/read against a bytearray model, across inline, one-level and
    two-level trees, with a tiny cache so that eviction, writeback and auto-commit all run."""
    rng = random.Random(seed)
    vol = open_vol(cache_bytes=64 * 4096, dirty_bytes=96 * 4096)
    model = bytearray()
    limit = 4 * 1024 * 1024  # > 760 nodes: MHT nodes with children
    with vol.open("f.bin", "w+b") as f:
        for step in range(220):
            op = rng.random()
            if op < 0.55:
                off = rng.choice([0, rng.randrange(limit), len(model), max(0, len(model) - 10)])
                n = rng.choice([1, 100, 4096, 5000, 40_000, 200_000])
                data = rng.randbytes(n)
                f.pwrite(data, off)
                if off > len(model):
                    model.extend(bytes(off - len(model)))
                model[off : off + n] = data
            elif op < 0.65:
                size = rng.choice([0, 10, 2920, 2921, 4096, rng.randrange(limit)])
                f.truncate(size)
                del model[size:]
                model.extend(bytes(size - len(model)))
            elif op < 0.9:
                off = rng.randrange(len(model) + 1)
                n = rng.randrange(1, 300_000)
                assert f.pread(off, n) == bytes(model[off : off + n]), step
            else:
                vol.sync()
    vol.close()
    assert open_vol().read_file("f.bin") == bytes(model)


def test_inline_small_files_take_one_node(open_vol: OpenVolume, vol_dir: Path) -> None:
    vol = open_vol()
    vol.write_file("small", b"s" * fmt.INLINE_CAPACITY)
    vol.write_file("larger", b"l" * (fmt.INLINE_CAPACITY + 1))
    vol.sync()
    sizes = sorted(p.stat().st_size for p in (vol_dir / "files").iterdir())
    # index (inline), small (inline), larger (meta + MHT + one data node)
    assert sizes == [4096, 4096, 3 * 4096]


def test_inline_tree_transitions_keep_content(open_vol: OpenVolume) -> None:
    vol = open_vol()
    vol.write_file("f", b"a" * 100)
    vol.sync()
    with vol.open("f", "r+b") as f:
        f.pwrite(b"b" * 10, 10_000)  # grows past inline: node 0 must come from the old inline
        vol.sync()
        assert f.pread(0, 100) == b"a" * 100
        f.truncate(50)  # back to inline
        vol.sync()
    vol.close()
    assert open_vol().read_file("f") == b"a" * 50


def test_sparse_file_reads_zeros_and_stores_little(open_vol: OpenVolume, vol_dir: Path) -> None:
    vol = open_vol()
    with vol.open("sparse", "wb") as f:
        f.pwrite(b"end", 50 * 1024 * 1024)
    vol.sync()
    with vol.open("sparse", "rb") as f:
        assert f.pread(1024 * 1024, 4096) == bytes(4096)
        assert f.pread(50 * 1024 * 1024 - 2, 10) == b"\0\0end"
    used = sum(p.stat().st_blocks * 512 for p in (vol_dir / "files").iterdir())
    assert used < 1024 * 1024


def test_truncate_then_extend_reads_zeros(open_vol: OpenVolume) -> None:
    vol = open_vol()
    data = os.urandom(1_000_000)
    vol.write_file("f", data)
    vol.sync()
    vol.truncate("f", 5000)
    vol.truncate("f", 900_000)
    got = vol.read_file("f")
    assert got[:5000] == data[:5000]
    assert got[5000:] == bytes(900_000 - 5000)
    vol.close()
    assert open_vol().read_file("f") == got


def test_overwrite_of_committed_data_goes_through_journal(open_vol: OpenVolume) -> None:
    vol = open_vol()
    vol.write_file("f", os.urandom(500_000))
    vol.sync()
    new = os.urandom(500_000)
    with vol.open("f", "r+b") as f:
        f.write(new)
        f.fsync()
    vol.close()
    assert open_vol().read_file("f") == new


def test_rename_file_and_directory_rebinds_paths(open_vol: OpenVolume) -> None:
    vol = open_vol()
    vol.mkdir("a/b", parents=True)
    vol.write_file("a/b/f1", b"one")
    vol.write_file("a/f2", b"two" * 2000)
    vol.sync()
    vol.rename("a", "z")
    vol.rename("z/f2", "z/b/f3")
    vol.close()
    vol = open_vol()
    assert vol.read_file("z/b/f1") == b"one"
    assert vol.read_file("z/b/f3") == b"two" * 2000
    assert not vol.exists("a")


def test_rename_replaces_existing_file(open_vol: OpenVolume) -> None:
    vol = open_vol()
    vol.write_file("new.tmp", b"new")
    vol.write_file("cur", b"old")
    vol.rename("new.tmp", "cur")
    assert vol.listdir() == ["cur"]
    vol.close()
    assert open_vol().read_file("cur") == b"new"


def test_namespace_errors_are_oserrors(open_vol: OpenVolume) -> None:
    vol = open_vol()
    vol.mkdir("d")
    vol.write_file("d/f", b"x")
    cases: list[tuple[Callable[[], object], int]] = [
        (lambda: vol.read_file("missing"), errno.ENOENT),
        (lambda: vol.mkdir("d"), errno.EEXIST),
        (lambda: vol.rmdir("d"), errno.ENOTEMPTY),
        (lambda: vol.unlink("d"), errno.EISDIR),
        (lambda: vol.rmdir("d/f"), errno.ENOTDIR),
        (lambda: vol.open("d/f", "xb"), errno.EEXIST),
        (lambda: vol.open("d", "rb"), errno.EISDIR),
        (lambda: vol.rename("d", "d/sub"), errno.EINVAL),
        (lambda: vol.stat("d/f/x"), errno.ENOTDIR),
        (lambda: vol.read_file("../x"), errno.EINVAL),
        (lambda: vol.write_file("n" * 256, b""), errno.ENAMETOOLONG),
    ]
    for call, code in cases:
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == code


def test_unlink_while_open_keeps_data_until_close(open_vol: OpenVolume, vol_dir: Path) -> None:
    vol = open_vol()
    vol.write_file("tmp", b"data" * 1000)
    vol.sync()
    f = vol.open("tmp", "r+b")
    vol.unlink("tmp")
    assert not vol.exists("tmp")
    f.pwrite(b"more", 4000)
    vol.sync()
    assert f.pread(0, 4) == b"data"
    f.close()
    vol.sync()
    assert len(list((vol_dir / "files").iterdir())) == 1  # only the index is left


def test_orphan_of_a_crashed_session_is_reclaimed(
    vol_dir: Path, key: bytes, store: MemoryFreshness
) -> None:
    vol = open_volume(vol_dir, key, counter=store)
    vol.write_file("tmp", b"x" * 10_000)
    vol.sync()
    f = vol.open("tmp", "rb")
    vol.unlink("tmp")
    vol.sync()  # the orphan is committed
    vol._vdir.unlock()  # simulate a crash: no close
    del f, vol
    vol2 = open_volume(vol_dir, key, counter=store)
    assert vol2.index.orphans() == []
    assert len(list((vol_dir / "files").iterdir())) == 1
    vol2.close()


def test_many_files_and_walk(open_vol: OpenVolume) -> None:
    vol = open_vol()
    for d in range(5):
        vol.mkdir(f"d{d}")
        for n in range(60):
            vol.write_file(f"d{d}/f{n}", b"z")
    vol.close()
    vol = open_vol()
    paths = [p for p, st in vol.walk() if st.is_file]
    assert len(paths) == 300
    assert vol.read_file("d4/f59") == b"z"


def test_symlink_roundtrip(open_vol: OpenVolume) -> None:
    vol = open_vol()
    st = vol.symlink(0, b"link", b"target/path", uid=0, gid=0)
    assert st.kind == "symlink"
    vol.close()
    vol = open_vol()
    assert vol.readlink(vol.stat("link").ino) == b"target/path"


def test_readonly_refuses_writes(open_vol: OpenVolume) -> None:
    vol = open_vol()
    vol.write_file("f", b"x")
    vol.close()
    ro = open_vol(readonly=True)
    assert ro.read_file("f") == b"x"
    with pytest.raises(OSError) as info:
        ro.write_file("g", b"y")
    assert info.value.errno == errno.EROFS


def test_second_writer_is_refused(open_vol: OpenVolume) -> None:
    open_vol()
    with pytest.raises(VolumeError, match="in use"):
        open_vol()


def test_wrong_key_is_volume_corrupt(vol_dir: Path, store: MemoryFreshness) -> None:
    with pytest.raises(VolumeCorrupt):
        open_volume(vol_dir, os.urandom(32), counter=store)


def test_not_a_volume(tmp_path: Path, key: bytes, store: MemoryFreshness) -> None:
    with pytest.raises(VolumeFormatError):
        open_volume(tmp_path, key, counter=store)
    (tmp_path / "sealpod-volume").write_bytes(b"hello")
    with pytest.raises(VolumeFormatError):
        open_volume(tmp_path, key, counter=store)


def test_create_refuses_existing_volume(vol_dir: Path, key: bytes, store: MemoryFreshness) -> None:
    with pytest.raises(VolumeError, match="already holds"):
        create_volume(vol_dir, key, counter=store)


def test_counter_advances_and_old_volume_is_refused(
    vol_dir: Path, key: bytes, store: MemoryFreshness, tmp_path: Path
) -> None:
    import shutil

    vol = open_volume(vol_dir, key, counter=store)
    vol.write_file("f", b"1")
    vol.close()
    shutil.copytree(vol_dir, tmp_path / "old")
    vol = open_volume(vol_dir, key, counter=store)
    vol.write_file("f", b"2")
    vol.close()
    shutil.rmtree(vol_dir)
    shutil.copytree(tmp_path / "old", vol_dir)
    with pytest.raises(RollbackDetected):
        open_volume(vol_dir, key, counter=store)


def test_moving_the_volume_directory_keeps_it_working(
    vol_dir: Path, key: bytes, store: MemoryFreshness, tmp_path: Path
) -> None:
    vol = open_volume(vol_dir, key, counter=store)
    vol.write_file("f", b"moved")
    vol.close()
    target = tmp_path / "elsewhere" / "v"
    target.parent.mkdir()
    vol_dir.rename(target)
    with open_volume(target, key, counter=store) as vol:
        assert vol.read_file("f") == b"moved"


def test_storage_overhead_of_a_large_file(open_vol: OpenVolume, vol_dir: Path) -> None:
    vol = open_vol()
    size = 16 * 1024 * 1024
    with vol.open("big", "wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(16):
            f.write(block)
    vol.sync()
    host = max(p.stat().st_size for p in (vol_dir / "files").iterdir())
    assert host == fmt.storage_size(size)
    assert (host - size) / size <= 0.015
    # The format stays under 1.5 % from 16 MiB up (smaller files pay for one metadata node).
    for size in (1 << 24, 1 << 26, 1 << 30, 1 << 36, 1 << 40):
        assert (fmt.storage_size(size) - size) / size <= 0.015


def test_info_reports_counts(open_vol: OpenVolume) -> None:
    vol = open_vol()
    vol.mkdir("d")
    vol.write_file("d/f", b"abc")
    vol.sync()
    info = vol.info()
    assert (info.files, info.directories, info.logical_bytes) == (1, 1, 3)
    assert info.counter == info.freshness_counter
