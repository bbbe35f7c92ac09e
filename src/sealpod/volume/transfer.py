"""Moving plaintext in and out of a volume (migration): a host directory or a tar archive.

Export writes every file, directory and symlink of the volume with its mode and mtime into a
private temporary directory (0700, beside the destination) or temporary archive, and renames it
into place only when everything was written: an export that fails part-way leaves no partial
plaintext behind. Holes of sparse files stay holes (only stored data is read and written, so a
1 TiB file with one byte written exports in milliseconds); a tar archive cannot keep holes, so a
file with more than ``SPARSE_TAR_LIMIT`` bytes of holes is refused for tar with a clear error.

Import copies a host tree (or a tar archive) into the volume and commits every ``BATCH_FILES``
files or ``BATCH_BYTES`` bytes, so memory stays bounded however large the tree. Archives are read
defensively: absolute names and ``..`` are refused, and only regular files, directories and
symlinks are taken (devices, FIFOs and hard links are skipped and counted). A target that
already exists in the volume is a ``ConfigError`` unless ``overwrite`` is set (then files and
symlinks are replaced; a directory is never replaced by a file, or the reverse).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat as statmod
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sealpod import _files
from sealpod.errors import ConfigError
from sealpod.volume.info import VolumeStat
from sealpod.volume.volume import Volume

CHUNK = 1 << 20
BATCH_FILES = 1000  # import commits at least this often: memory stays flat (issue 16.9)
BATCH_BYTES = 64 << 20
SPARSE_TAR_LIMIT = 1 << 30  # bytes of holes a tar export writes out as zeros, at most
Progress = Callable[[int], None]
Phase = Callable[[str], None]


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

    The result appears only once complete (a temporary directory or file beside ``dest``,
    renamed into place); on any failure the temporary copy is removed. A new directory is
    created with mode 0700 (it holds plaintext).

    Raises:
        ConfigError: ``dest`` exists and is not an empty directory (or, for an archive, exists
            at all), cannot be written, or a sparse file would not fit a tar archive.
        VolumeCorrupt: a file fails authentication (export stops; nothing is left behind).
    """
    if dest.is_symlink() or (dest.exists() and (not _is_tar(dest) and not dest.is_dir())):
        raise ConfigError(f"{dest} exists and is not an empty directory")
    if _is_tar(dest) and dest.exists():
        raise ConfigError(f"{dest} already exists; refusing to overwrite it")
    if dest.is_dir() and any(dest.iterdir()):
        raise ConfigError(f"{dest} exists and is not an empty directory")
    tmp = f".{dest.name}.partial-{secrets.token_hex(6)}"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        parent_fd = _files.open_dir(dest.parent)
    except OSError as exc:
        raise ConfigError(f"cannot write {dest}: {exc.strerror or exc}") from exc
    try:
        if _is_tar(dest):
            return _export_tar_file(vol, dest, parent_fd, tmp, progress)
        os.mkdir(tmp, 0o700, dir_fd=parent_fd)
        try:
            stats = _export_dir(vol, dest.parent / tmp, progress)
            # Onto nothing or an empty directory (rename(2) replaces those), never more.
            os.rename(tmp, dest.name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
        except BaseException:
            shutil.rmtree(tmp, dir_fd=parent_fd, ignore_errors=True)
            raise
        return stats
    except OSError as exc:
        raise ConfigError(f"cannot write {dest}: {exc.strerror or exc}") from exc
    finally:
        os.close(parent_fd)


def _export_dir(vol: Volume, root: Path, progress: Progress | None) -> TransferStats:
    """Export into ``root``, a fresh 0700 directory only this process knows about."""
    stats = TransferStats()
    dirs: list[tuple[Path, int, int]] = []
    for logical, st in vol.walk():
        target = root / logical
        if st.is_dir:
            target.mkdir(mode=0o700)
            dirs.append((target, st.mode, st.mtime_ns))
            stats.directories += 1
        elif st.kind == "symlink":
            os.symlink(vol.readlink(st.ino), target)
            stats.symlinks += 1
        else:
            with open(target, "xb") as out:
                _copy_sparse(vol, st, out, stats, progress)
                os.fchmod(out.fileno(), statmod.S_IMODE(st.mode))
            os.utime(target, ns=(st.mtime_ns, st.mtime_ns))
            stats.files += 1
    for target, mode, mtime in reversed(dirs):  # children first changed their parents' mtime
        os.chmod(target, statmod.S_IMODE(mode))
        os.utime(target, ns=(mtime, mtime))
    return stats


def _copy_sparse(
    vol: Volume, st: VolumeStat, out: BinaryIO, stats: TransferStats, progress: Progress | None
) -> None:
    """Copy what is stored of one file; holes stay holes (a final truncate sets the size)."""
    extents = vol.loaded_file(st.ino).stored_extents()
    done = 0
    for start, end in extents:
        out.seek(start)
        pos = start
        while pos < end:
            chunk = vol.pread(st.ino, pos, min(CHUNK, end - pos))
            if not chunk:
                break
            out.write(chunk)
            pos += len(chunk)
            stats.bytes += len(chunk)
        if progress is not None:
            progress(end - done)  # the hole before this extent counts as done too
        done = end
    out.truncate(st.size)
    if progress is not None and st.size > done:
        progress(st.size - done)
    vol.forget_file(st.ino)


def _export_tar_file(
    vol: Volume, dest: Path, parent_fd: int, tmp: str, progress: Progress | None
) -> TransferStats:
    fd = _files.create_new(parent_fd, tmp)
    try:
        with os.fdopen(fd, "wb") as raw:
            mode = "w:gz" if dest.name.endswith(("gz", "tgz")) else "w"
            with tarfile.open(fileobj=raw, mode=mode) as tar:  # type: ignore[call-overload]
                stats = _export_tar(vol, tar, progress)
            raw.flush()
            os.fsync(raw.fileno())
        # A hard link never replaces anything: a file that appeared at ``dest`` meanwhile wins.
        os.link(tmp, dest.name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=parent_fd)
    return stats


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
            stored = sum(end - start for start, end in vol.loaded_file(st.ino).stored_extents())
            if st.size - stored > SPARSE_TAR_LIMIT:
                raise ConfigError(
                    f"{logical!r} is sparse ({st.size} bytes, {stored} stored): a tar archive "
                    "would hold its holes as zeros; export to a directory, which keeps them"
                )
            info.size = st.size
            with vol.open(logical, "rb") as src:
                tar.addfile(info, _Counting(src.read, stats, progress))
            vol.forget_file(st.ino)
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


class _Importer:
    """Adds entries to the volume, commits in batches, and turns namespace errors into
    ``ConfigError`` naming the entry."""

    def __init__(
        self, vol: Volume, *, overwrite: bool, progress: Progress | None, phase: Phase | None
    ) -> None:
        self.vol = vol
        self.overwrite = overwrite
        self.progress = progress
        self.phase = phase
        self.stats = TransferStats()
        self._files = 0
        self._bytes = 0

    def commit(self) -> None:
        if self.phase is not None:
            self.phase("committing")
        self.vol.sync()
        self._files = self._bytes = 0
        if self.phase is not None:
            self.phase("copying")

    def _counted(self, size: int) -> None:
        self._files += 1
        self._bytes += size
        if self._files >= BATCH_FILES or self._bytes >= BATCH_BYTES:
            self.commit()

    def _refuse(self, target: str, exc: OSError) -> ConfigError:
        if exc.errno == errno.EEXIST:
            return ConfigError(
                f"{target!r} already exists in the volume (pass --overwrite to replace files "
                "and symlinks)"
            )
        if exc.errno == errno.ENAMETOOLONG:
            return ConfigError(
                f"{target!r} is too long for a volume (names up to 255 bytes, logical paths "
                "up to 1024 bytes)"
            )
        return ConfigError(f"cannot import {target!r}: {exc.strerror or exc}")

    def _existing(self, target: str) -> VolumeStat | None:
        """What is at ``target`` now; a non-directory there is removed when overwriting."""
        try:
            st = self.vol.stat(target)  # never follows a symlink
        except FileNotFoundError:
            return None
        if st.is_dir:
            return st
        if not self.overwrite:
            raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), target)
        self.vol.unlink(target)
        return None

    def directory(self, target: str, mode: int) -> None:
        try:
            st = self._existing(target)
            if st is None:
                self.vol.mkdir(target, statmod.S_IMODE(mode), parents=True)
            self.stats.directories += 1
        except OSError as exc:
            raise self._refuse(target, exc) from exc

    def symlink(self, target: str, link: str) -> None:
        try:
            if self._existing(target) is not None:
                raise OSError(errno.EISDIR, "is a directory in the volume", target)
            parent_path, _, name = target.rpartition("/")
            if parent_path:
                self.vol.mkdir(parent_path, parents=True, exist_ok=True)
            parent = self.vol.stat(parent_path)
            self.vol.symlink(
                parent.ino,
                name.encode("utf-8", "surrogateescape"),
                link.encode("utf-8", "surrogateescape"),
                uid=os.getuid(),
                gid=os.getgid(),
            )
        except OSError as exc:
            raise self._refuse(target, exc) from exc
        self.stats.symlinks += 1
        self._counted(0)

    def file(self, target: str, read: Callable[[int], bytes], mode: int, mtime_ns: int) -> None:
        size = 0
        try:
            if self._existing(target) is not None:
                raise OSError(errno.EISDIR, "is a directory in the volume", target)
            parent = target.rpartition("/")[0]
            if parent:
                self.vol.mkdir(parent, parents=True, exist_ok=True)
            with self.vol.open(target, "xb") as out:
                while chunk := read(CHUNK):
                    out.write(chunk)
                    size += len(chunk)
                    if self.progress is not None:
                        self.progress(len(chunk))
                ino = out.ino
            self.vol.setattr(ino, mode=statmod.S_IMODE(mode), mtime_ns=mtime_ns)
        except OSError as exc:
            raise self._refuse(target, exc) from exc
        self.stats.bytes += size
        self.stats.files += 1
        self._counted(size)


def import_tree(
    vol: Volume,
    src: Path,
    *,
    into: str = "",
    overwrite: bool = False,
    progress: Progress | None = None,
    phase: Phase | None = None,
) -> TransferStats:
    """Copy a host directory or a tar archive into the volume under ``into``.

    Commits every ``BATCH_FILES`` files or ``BATCH_BYTES`` bytes and at the end, so memory stays
    bounded; an interrupted import leaves the batches committed so far (re-run it with
    ``overwrite``). ``phase`` is told "copying" and "committing" as the work changes.

    Raises:
        ConfigError: ``src`` does not exist or cannot be read; an archive member has an unsafe
            name; a target already exists in the volume (without ``overwrite``), is a directory
            where a file goes (or the reverse), or is too long for the volume's format.
    """
    if not src.exists():
        raise ConfigError(f"{src} does not exist")
    importer = _Importer(vol, overwrite=overwrite, progress=progress, phase=phase)
    if phase is not None:
        phase("copying")
    if into.strip("/"):
        importer.directory(into.strip("/"), 0o755)
        importer.stats.directories -= 1  # the destination itself is not imported content
    prefix = into.strip("/") + "/" if into.strip("/") else ""
    try:
        if src.is_file() and tarfile.is_tarfile(src):
            with tarfile.open(src) as tar:
                _import_tar(importer, tar, prefix)
        elif src.is_dir():
            _import_dir(importer, src, prefix)
        else:
            raise ConfigError(f"{src} is neither a directory nor a tar archive")
    except (OSError, tarfile.TarError) as exc:  # the host side: unreadable source
        raise ConfigError(f"cannot read {src}: {exc}") from exc
    importer.commit()
    return importer.stats


def _import_dir(importer: _Importer, src: Path, prefix: str) -> None:
    for root, dirnames, filenames in os.walk(src):
        rel = os.path.relpath(root, src)
        base = prefix + ("" if rel == "." else rel + "/")
        for name in sorted(dirnames):
            path = Path(root) / name
            if path.is_symlink():
                importer.symlink(base + name, os.readlink(path))
                continue
            importer.directory(base + name, path.lstat().st_mode)
        for name in sorted(filenames):
            path = Path(root) / name
            st = path.lstat()
            if statmod.S_ISLNK(st.st_mode):
                importer.symlink(base + name, os.readlink(path))
            elif statmod.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    importer.file(base + name, f.read, st.st_mode, st.st_mtime_ns)
            else:
                importer.stats.skipped += 1


def _import_tar(importer: _Importer, tar: tarfile.TarFile, prefix: str) -> None:
    for member in tar:
        name = member.name.strip("/") if not member.name.startswith("/") else None
        if name is None or ".." in name.split("/"):
            raise ConfigError(f"archive member {member.name!r} has an unsafe name")
        if not name or name == ".":
            continue
        target = prefix + name
        if member.isdir():
            importer.directory(target, member.mode)
        elif member.issym():
            importer.symlink(target, member.linkname)
        elif member.isreg():
            reader = tar.extractfile(member)
            if reader is None:
                importer.stats.skipped += 1
                continue
            with reader:
                importer.file(target, reader.read, member.mode, int(member.mtime * 1e9))
        else:
            importer.stats.skipped += 1
