"""Moving plaintext in and out of a volume (migration): a host directory or a tar archive.

Export writes every file, directory and symlink of the volume with its mode and mtime; import
copies a host tree (or a tar archive) into the volume and commits once at the end. Archives are
read defensively: absolute names and ``..`` are refused, and only regular files, directories and
symlinks are taken (devices, FIFOs and hard links are skipped and counted).
"""

from __future__ import annotations

import errno
import os
import stat as statmod
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sealpod.errors import ConfigError
from sealpod.volume.volume import Volume

CHUNK = 1 << 20
Progress = Callable[[int], None]


@dataclass(slots=True)
class TransferStats:
    files: int = 0
    directories: int = 0
    symlinks: int = 0
    bytes: int = 0
    skipped: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "files": self.files,
            "directories": self.directories,
            "symlinks": self.symlinks,
            "bytes": self.bytes,
            "skipped": self.skipped,
        }


def _is_tar(path: Path) -> bool:
    return path.name.endswith((".tar", ".tar.gz", ".tgz"))


def total_bytes(vol: Volume) -> int:
    """Logical bytes of every regular file (for a progress bar)."""
    return sum(st.size for _, st in vol.walk() if st.is_file)


def export_volume(vol: Volume, dest: Path, *, progress: Progress | None = None) -> TransferStats:
    """Write the volume's plaintext to ``dest``: a new directory, or a ``.tar``/``.tar.gz`` file.

    Raises:
        ConfigError: ``dest`` exists and is not an empty directory.
        VolumeCorrupt: a file fails authentication (export stops; nothing unverified is written).
    """
    if _is_tar(dest):
        if dest.exists():
            raise ConfigError(f"{dest} already exists; refusing to overwrite it")
        with tarfile.open(dest, "w:gz" if dest.name.endswith(("gz", "tgz")) else "w") as tar:
            return _export_tar(vol, tar, progress)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ConfigError(f"{dest} exists and is not an empty directory")
    dest.mkdir(parents=True, exist_ok=True)
    stats = TransferStats()
    dirs: list[tuple[Path, int, int]] = []
    for logical, st in vol.walk():
        target = dest / logical
        if st.is_dir:
            target.mkdir()
            dirs.append((target, st.mode, st.mtime_ns))
            stats.directories += 1
        elif st.kind == "symlink":
            os.symlink(vol.readlink(st.ino), target)
            stats.symlinks += 1
        else:
            with vol.open(logical, "rb") as src, open(target, "xb") as out:
                _copy(src.read, out, stats, progress)
            os.chmod(target, statmod.S_IMODE(st.mode))
            os.utime(target, ns=(st.mtime_ns, st.mtime_ns))
            stats.files += 1
    for target, mode, mtime in reversed(dirs):  # children first changed their parents' mtime
        os.chmod(target, statmod.S_IMODE(mode))
        os.utime(target, ns=(mtime, mtime))
    return stats


def _copy(
    read: Callable[[int], bytes], out: BinaryIO, stats: TransferStats, progress: Progress | None
) -> None:
    while chunk := read(CHUNK):
        out.write(chunk)
        stats.bytes += len(chunk)
        if progress is not None:
            progress(len(chunk))


def _export_tar(vol: Volume, tar: tarfile.TarFile, progress: Progress | None) -> TransferStats:
    stats = TransferStats()
    for logical, st in vol.walk():
        info = tarfile.TarInfo(logical)
        info.mode = statmod.S_IMODE(st.mode)
        info.mtime = st.mtime_ns // 1_000_000_000
        info.uid, info.gid = st.uid, st.gid
        if st.is_dir:
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
            stats.directories += 1
        elif st.kind == "symlink":
            info.type = tarfile.SYMTYPE
            info.linkname = vol.readlink(st.ino).decode("utf-8", "surrogateescape")
            tar.addfile(info)
            stats.symlinks += 1
        else:
            info.size = st.size
            with vol.open(logical, "rb") as src:
                tar.addfile(info, _Counting(src.read, stats, progress))
            stats.files += 1
    return stats


class _Counting:
    """A file-like reader over a volume file that counts bytes for the progress bar."""

    def __init__(
        self, read: Callable[[int], bytes], stats: TransferStats, progress: Progress | None
    ):
        self._read = read
        self._stats = stats
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        data = self._read(size if size >= 0 else CHUNK)
        self._stats.bytes += len(data)
        if self._progress is not None:
            self._progress(len(data))
        return data


def import_tree(
    vol: Volume, src: Path, *, into: str = "", progress: Progress | None = None
) -> TransferStats:
    """Copy a host directory or a tar archive into the volume under ``into``; commit once.

    Raises:
        ConfigError: ``src`` does not exist, or an archive member has an unsafe name.
        OSError: a target already exists in the volume (EEXIST).
    """
    if not src.exists():
        raise ConfigError(f"{src} does not exist")
    if into:
        vol.mkdir(into, parents=True, exist_ok=True)
    prefix = into.strip("/") + "/" if into.strip("/") else ""
    stats = TransferStats()
    if src.is_file() and tarfile.is_tarfile(src):
        with tarfile.open(src) as tar:
            _import_tar(vol, tar, prefix, stats, progress)
    elif src.is_dir():
        _import_dir(vol, src, prefix, stats, progress)
    else:
        raise ConfigError(f"{src} is neither a directory nor a tar archive")
    vol.sync()
    return stats


def _import_dir(
    vol: Volume, src: Path, prefix: str, stats: TransferStats, progress: Progress | None
) -> None:
    for root, dirnames, filenames in os.walk(src):
        rel = os.path.relpath(root, src)
        base = prefix + ("" if rel == "." else rel + "/")
        for name in sorted(dirnames):
            path = Path(root) / name
            if path.is_symlink():
                _add_symlink(vol, base + name, os.readlink(path), stats)
                continue
            vol.mkdir(base + name, statmod.S_IMODE(path.lstat().st_mode))
            stats.directories += 1
        for name in sorted(filenames):
            path = Path(root) / name
            st = path.lstat()
            if statmod.S_ISLNK(st.st_mode):
                _add_symlink(vol, base + name, os.readlink(path), stats)
            elif statmod.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    _add_file(vol, base + name, f.read, st.st_mode, st.st_mtime_ns, stats, progress)
            else:
                stats.skipped += 1


def _import_tar(
    vol: Volume, tar: tarfile.TarFile, prefix: str, stats: TransferStats, progress: Progress | None
) -> None:
    for member in tar:
        name = member.name.strip("/") if not member.name.startswith("/") else None
        if name is None or ".." in name.split("/"):
            raise ConfigError(f"archive member {member.name!r} has an unsafe name")
        if not name or name == ".":
            continue
        target = prefix + name
        if member.isdir():
            vol.mkdir(target, member.mode & 0o7777, parents=True, exist_ok=True)
            stats.directories += 1
        elif member.issym():
            _add_symlink(vol, target, member.linkname, stats)
        elif member.isreg():
            parent = target.rsplit("/", 1)[0] if "/" in target else ""
            if parent:
                vol.mkdir(parent, parents=True, exist_ok=True)
            reader = tar.extractfile(member)
            if reader is None:
                stats.skipped += 1
                continue
            with reader:
                _add_file(
                    vol, target, reader.read, member.mode, int(member.mtime * 1e9), stats, progress
                )
        else:
            stats.skipped += 1


def _add_symlink(vol: Volume, target: str, link: str, stats: TransferStats) -> None:
    parent_path, _, name = target.rpartition("/")
    parent = vol.stat(parent_path) if parent_path else vol.stat("")
    vol.symlink(
        parent.ino,
        name.encode("utf-8", "surrogateescape"),
        link.encode("utf-8", "surrogateescape"),
        uid=os.getuid(),
        gid=os.getgid(),
    )
    stats.symlinks += 1


def _add_file(
    vol: Volume,
    target: str,
    read: Callable[[int], bytes],
    mode: int,
    mtime_ns: int,
    stats: TransferStats,
    progress: Progress | None,
) -> None:
    if vol.exists(target):
        raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), target)
    with vol.open(target, "xb") as out:
        while chunk := read(CHUNK):
            out.write(chunk)
            stats.bytes += len(chunk)
            if progress is not None:
                progress(len(chunk))
        ino = out.ino
    vol.setattr(ino, mode=statmod.S_IMODE(mode), mtime_ns=mtime_ns)
    stats.files += 1
