"""The format's limits are enforced when something is created, never at commit (issue 17.5).

A metadata node holds a logical path of at most 1,024 bytes, a directory entry a name of at
most 255, a file at most 2^46 bytes, the index at most 2^24 records. Anything beyond is refused
with the errno a file system gives (ENAMETOOLONG, EFBIG, ENOSPC) before anything changes, so a
later commit cannot fail because of it and unrelated uncommitted files are never lost.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

import pytest

from sealpod.volume import MemoryFreshness, Volume, open_volume
from sealpod.volume import format as fmt

OpenVolume = Callable[..., Volume]

MAX = fmt.MAX_PATH_SIZE


def _deep_dir(vol: Volume, length: int) -> str:
    """Create nested directories whose logical path is exactly ``length`` bytes."""
    parts: list[str] = []
    used = 0
    while used < length:
        room = length - used - (1 if parts else 0)
        part = "d" * min(200, room)
        parts.append(part)
        used += len(part) + (1 if len(parts) > 1 else 0)
    path = "/".join(parts)
    assert len(path) == length
    vol.mkdir(path, parents=True)
    return path


def _errno(info: pytest.ExceptionInfo[OSError]) -> int | None:
    return info.value.errno


def test_a_path_over_the_limit_is_refused_and_other_files_survive(
    open_vol: OpenVolume, vol_dir: Path, key: bytes, store: MemoryFreshness
) -> None:
    vol = open_vol()
    vol.write_file("unrelated.txt", b"uncommitted work")  # not yet committed
    deep = _deep_dir(vol, MAX - 2)
    vol.write_file(f"{deep}/a", b"fits exactly")  # MAX bytes: accepted
    with pytest.raises(OSError) as info:
        vol.write_file(f"{deep}/ab", b"one byte too long")
    assert _errno(info) == errno.ENAMETOOLONG
    with pytest.raises(OSError) as info:
        vol.mkdir(f"{deep}/ab")
    assert _errno(info) == errno.ENAMETOOLONG
    with pytest.raises(OSError) as info:
        vol.symlink(vol.stat(deep).ino, b"ab", b"target", uid=0, gid=0)
    assert _errno(info) == errno.ENAMETOOLONG
    vol.sync()  # the volume is still usable and commits
    vol.close()
    with open_volume(vol_dir, key, counter=store, readonly=True) as again:
        assert again.read_file("unrelated.txt") == b"uncommitted work"
        assert again.read_file(f"{deep}/a") == b"fits exactly"
        assert not again.exists(f"{deep}/ab")


def test_renaming_a_directory_too_deep_is_refused_before_anything_moves(
    open_vol: OpenVolume,
) -> None:
    vol = open_vol()
    deep = _deep_dir(vol, MAX - 10)
    vol.mkdir("src/sub", parents=True)
    vol.write_file("src/sub/file.txt", b"x")
    with pytest.raises(OSError) as info:
        vol.rename("src", f"{deep}/src")  # src/sub/file.txt would be MAX + 10 bytes
    assert _errno(info) == errno.ENAMETOOLONG
    assert vol.read_file("src/sub/file.txt") == b"x"
    vol.rename("src/sub/file.txt", "f")
    vol.rename("src", f"{deep}/s")  # now the deepest path is deep/s/sub: fits
    vol.sync()
    assert vol.exists(f"{deep}/s/sub")


def test_a_name_over_255_bytes_is_refused(open_vol: OpenVolume) -> None:
    vol = open_vol()
    with pytest.raises(OSError) as info:
        vol.write_file("n" * 256, b"")
    assert _errno(info) == errno.ENAMETOOLONG
    vol.write_file("n" * 255, b"ok")
    vol.sync()


def test_a_file_over_the_maximum_size_is_efbig_and_the_volume_stays_usable(
    open_vol: OpenVolume,
) -> None:
    vol = open_vol()
    vol.write_file("other.txt", b"keep")
    with vol.open("big", "w+b") as f:
        with pytest.raises(OSError) as info:
            f.pwrite(b"x", fmt.MAX_FILE_SIZE)
        assert _errno(info) == errno.EFBIG
        with pytest.raises(OSError) as info:
            f.truncate(fmt.MAX_FILE_SIZE + 1)
        assert _errno(info) == errno.EFBIG
        f.pwrite(b"y", 10)
    vol.sync()
    assert vol.read_file("other.txt") == b"keep"
    assert vol.read_file("big") == bytes(10) + b"y"


def test_a_full_index_is_enospc_and_the_volume_stays_usable(
    open_vol: OpenVolume, monkeypatch: pytest.MonkeyPatch
) -> None:
    vol = open_vol()
    vol.write_file("first.txt", b"1")
    monkeypatch.setattr(fmt, "MAX_RECORDS", vol.index.count)
    with pytest.raises(OSError) as info:
        vol.write_file("second.txt", b"2")
    assert _errno(info) == errno.ENOSPC
    vol.sync()
    assert vol.read_file("first.txt") == b"1"
