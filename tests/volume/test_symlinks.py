"""Entries of a volume's host directory that the host replaced by symlinks (or FIFOs) are refused.

The host owns the volume directory. A ``journal``, header, ``files/`` or host file that is a
symlink must never be followed: the target (anywhere the workload's user can write) would be
truncated, overwritten or deleted as garbage. Each case plants a link to a file or directory
outside the volume, checks the typed error, and checks the target is untouched.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from sealpod.errors import VolumeCorrupt, VolumeError
from sealpod.volume import MemoryFreshness, create_volume, open_volume
from sealpod.volume.fsck import fsck


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A directory outside the volume with files a confused volume would destroy."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_bytes(b"keep me")
    (outside / ("ab" * 16)).write_bytes(b"named like a host file")  # looks like garbage
    return outside


def _populated(path: Path, key: bytes, store: MemoryFreshness) -> None:
    create_volume(path, key, counter=store)
    with open_volume(path, key, counter=store) as vol:
        vol.write_file("a.txt", b"data")


def test_journal_symlink_is_refused_and_its_target_kept(
    tmp_path: Path, key: bytes, store: MemoryFreshness, victim: Path
) -> None:
    vol = tmp_path / "vol"
    _populated(vol, key, store)
    (vol / "journal").unlink(missing_ok=True)
    (vol / "journal").symlink_to(victim / "precious.txt")
    with pytest.raises(VolumeCorrupt, match=r"journal.*symlink"):
        open_volume(vol, key, counter=store)
    with pytest.raises(VolumeCorrupt, match=r"journal.*symlink"):
        open_volume(vol, key, counter=store, readonly=True)
    assert (victim / "precious.txt").read_bytes() == b"keep me"


def test_journal_planted_during_a_session_is_refused_at_commit(
    tmp_path: Path, key: bytes, store: MemoryFreshness, victim: Path
) -> None:
    vol_dir = tmp_path / "vol"
    _populated(vol_dir, key, store)
    with open_volume(vol_dir, key, counter=store) as vol:
        vol.write_file("a.txt", b"x" * 10_000)  # an overwrite: the commit needs the journal
        (vol_dir / "journal").unlink(missing_ok=True)
        (vol_dir / "journal").symlink_to(victim / "precious.txt")
        with pytest.raises(VolumeCorrupt, match=r"journal.*symlink"):
            vol.sync()
    assert (victim / "precious.txt").read_bytes() == b"keep me"


def test_journal_fifo_does_not_hang(tmp_path: Path, key: bytes, store: MemoryFreshness) -> None:
    vol = tmp_path / "vol"
    _populated(vol, key, store)
    (vol / "journal").unlink(missing_ok=True)
    os.mkfifo(vol / "journal")
    with pytest.raises(VolumeCorrupt, match="not a regular file"):
        open_volume(vol, key, counter=store)


def test_files_dir_symlink_is_refused_and_nothing_is_deleted(
    tmp_path: Path, key: bytes, store: MemoryFreshness, victim: Path
) -> None:
    vol = tmp_path / "vol"
    _populated(vol, key, store)
    # The host moves files/ away and links it to a directory of the user's.
    for entry in (vol / "files").iterdir():
        shutil.copy(entry, victim / entry.name)
    shutil.rmtree(vol / "files")
    (vol / "files").symlink_to(victim)
    before = sorted(p.name for p in victim.iterdir())
    with pytest.raises(VolumeCorrupt, match=r"files directory.*symlink"):
        open_volume(vol, key, counter=store)
    with pytest.raises(VolumeCorrupt, match=r"files directory.*symlink"):
        open_volume(vol, key, counter=store, readonly=True)
    assert sorted(p.name for p in victim.iterdir()) == before
    assert (victim / ("ab" * 16)).read_bytes() == b"named like a host file"
    report = fsck(vol, key, counter=store)
    assert not report.ok


def test_create_refuses_a_files_symlink(
    tmp_path: Path, key: bytes, store: MemoryFreshness, victim: Path
) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "files").symlink_to(victim)
    with pytest.raises(VolumeCorrupt, match=r"files directory.*symlink"):
        create_volume(vol, key, counter=store)
    assert sorted(p.name for p in victim.iterdir()) == ["ab" * 16, "precious.txt"]


def test_header_symlink_is_refused(
    tmp_path: Path, key: bytes, store: MemoryFreshness, victim: Path
) -> None:
    vol = tmp_path / "vol"
    _populated(vol, key, store)
    real = victim / "header-copy"
    shutil.copy(vol / "sealpod-volume", real)
    (vol / "sealpod-volume").unlink()
    (vol / "sealpod-volume").symlink_to(real)
    before = real.read_bytes()
    with pytest.raises(VolumeCorrupt, match=r"header.*symlink"):
        open_volume(vol, key, counter=store)
    assert real.read_bytes() == before


def test_create_over_a_header_symlink_is_refused(
    tmp_path: Path, key: bytes, store: MemoryFreshness, victim: Path
) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "sealpod-volume").symlink_to(victim / "precious.txt")
    with pytest.raises(VolumeError, match="already holds"):
        create_volume(vol, key, counter=store)
    assert (victim / "precious.txt").read_bytes() == b"keep me"


def test_host_file_symlink_is_refused_and_its_target_kept(
    tmp_path: Path, key: bytes, store: MemoryFreshness, victim: Path
) -> None:
    vol_dir = tmp_path / "vol"
    _populated(vol_dir, key, store)
    with open_volume(vol_dir, key, counter=store, readonly=True) as vol:
        fid = vol.index.inodes[vol.stat("a.txt").ino].file_id.hex()
    host = vol_dir / "files" / fid
    copy = victim / "host-copy"
    shutil.copy(host, copy)
    host.unlink()
    host.symlink_to(copy)
    before = copy.read_bytes()
    with open_volume(vol_dir, key, counter=store) as vol:
        with pytest.raises(VolumeCorrupt, match="symlink"):
            vol.read_file("a.txt")
        with pytest.raises(VolumeCorrupt, match="symlink"):
            vol.write_file("a.txt", b"overwrite")
    assert copy.read_bytes() == before


def test_stray_symlink_in_files_is_removed_not_followed(
    tmp_path: Path, key: bytes, store: MemoryFreshness, victim: Path
) -> None:
    vol = tmp_path / "vol"
    _populated(vol, key, store)
    stray = vol / "files" / ("cd" * 16)
    stray.symlink_to(victim / "precious.txt")
    with open_volume(vol, key, counter=store) as v:  # a writable open collects garbage
        assert v.read_file("a.txt") == b"data"
    assert not stray.is_symlink()
    assert (victim / "precious.txt").read_bytes() == b"keep me"
