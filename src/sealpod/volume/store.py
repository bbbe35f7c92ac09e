"""Host I/O for volumes: the files in a volume directory, durable writes, the journal, locking.

Nothing here knows about keys or plaintext; it moves opaque 4096-byte slots and records. The
crash-safety protocol that orders these calls lives in :mod:`sealpod.volume.commit`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
from pathlib import Path

from sealpod.errors import VolumeCorrupt, VolumeError, VolumeFormatError
from sealpod.volume import format as fmt

HEADER_NAME = "sealpod-volume"
JOURNAL_NAME = "journal"
FILES_DIR = "files"

_libc: ctypes.CDLL | None = None


def _os_error(exc: OSError, what: str) -> VolumeError:
    if exc.errno == errno.ENOENT:
        return VolumeCorrupt(f"{what}: missing on the host (deleted or renamed)")
    return VolumeError(f"{what}: {exc.strerror or exc}")


def syncfs(fd: int) -> None:
    """Flush the whole host file system holding ``fd`` (cheaper than many fsyncs)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise VolumeError(f"syncfs failed: {os.strerror(err)}")


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (created, renamed, removed files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    view = memoryview(data).cast("B")
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


class HostFile:
    """One protected file on the host: a sequence of 4096-byte slots."""

    __slots__ = ("_fd", "overlay", "path", "readonly")

    def __init__(self, path: Path, fd: int, *, readonly: bool) -> None:
        self.path = path
        self._fd = fd
        self.readonly = readonly
        #: slot -> node bytes not yet applied (a read-only view of a pending journal)
        self.overlay: dict[int, bytes] = {}

    @classmethod
    def open(cls, path: Path, *, create: bool = False, readonly: bool = False) -> HostFile:
        """Open (or with ``create``, create exclusively) a host file.

        Raises:
            VolumeCorrupt: the file is missing.
            VolumeError: any other OS error.
        """
        flags = os.O_RDONLY if readonly else os.O_RDWR
        if create:
            flags |= os.O_CREAT | os.O_EXCL
        try:
            fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise _os_error(exc, f"host file {path.name}") from exc
        return cls(path, fd, readonly=readonly)

    @property
    def fd(self) -> int:
        return self._fd

    def length(self) -> int:
        return os.fstat(self._fd).st_size

    def read_slots(self, first: int, count: int) -> bytes:
        """Read ``count`` slots from ``first``; fewer bytes come back at the end of the file."""
        try:
            data = os.pread(self._fd, count * fmt.NODE_SIZE, first * fmt.NODE_SIZE)
        except OSError as exc:
            raise _os_error(exc, f"host file {self.path.name}") from exc
        if self.overlay:
            buf = bytearray(data)
            for slot in range(first, first + count):
                node = self.overlay.get(slot)
                if node is not None:
                    at = (slot - first) * fmt.NODE_SIZE
                    if len(buf) < at:
                        buf.extend(bytes(at - len(buf)))
                    buf[at : at + fmt.NODE_SIZE] = node
            return bytes(buf)
        return data

    def read_slots_into(self, first: int, buffers: list[bytearray]) -> int:
        """Read consecutive slots from ``first`` into ``buffers`` (the first 4096 bytes of
        each); return how many whole slots were read (fewer at the end of the file)."""
        if self.overlay:
            data = self.read_slots(first, len(buffers))
            for n, buf in enumerate(buffers):
                buf[: fmt.NODE_SIZE] = data[n * fmt.NODE_SIZE : (n + 1) * fmt.NODE_SIZE]
            return len(data) // fmt.NODE_SIZE
        views = [memoryview(buf)[: fmt.NODE_SIZE] for buf in buffers]
        try:
            got = os.preadv(self._fd, views, first * fmt.NODE_SIZE)
        except OSError as exc:
            raise _os_error(exc, f"host file {self.path.name}") from exc
        return got // fmt.NODE_SIZE

    def read_slots_strided(self, first: int, count: int, buf: memoryview) -> int:
        """Read ``count`` consecutive slots into ``buf`` with a 4112-byte stride (16 spare
        bytes after each node for its tag); return how many whole slots were read."""
        stride = fmt.NODE_SIZE + fmt.TAG_SIZE
        views = [buf[k * stride : k * stride + fmt.NODE_SIZE] for k in range(count)]
        if self.overlay:
            data = self.read_slots(first, count)
            for k, view in enumerate(views):
                chunk = data[k * fmt.NODE_SIZE : (k + 1) * fmt.NODE_SIZE]
                view[: len(chunk)] = chunk
            return len(data) // fmt.NODE_SIZE
        try:
            got = os.preadv(self._fd, views, first * fmt.NODE_SIZE)
        except OSError as exc:
            raise _os_error(exc, f"host file {self.path.name}") from exc
        return got // fmt.NODE_SIZE

    def write_slots(self, first: int, data: bytes | bytearray | memoryview) -> None:
        try:
            _write_all(self._fd, data, first * fmt.NODE_SIZE)
        except OSError as exc:
            raise _os_error(exc, f"host file {self.path.name}") from exc

    def truncate_slots(self, count: int) -> None:
        try:
            os.ftruncate(self._fd, count * fmt.NODE_SIZE)
        except OSError as exc:
            raise _os_error(exc, f"host file {self.path.name}") from exc

    def sync(self) -> None:
        try:
            os.fdatasync(self._fd)
        except OSError as exc:
            raise _os_error(exc, f"host file {self.path.name}") from exc

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class VolumeDir:
    """The host directory of one volume."""

    __slots__ = ("_lock_fd", "root")

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock_fd = -1

    @property
    def header_path(self) -> Path:
        return self.root / HEADER_NAME

    @property
    def journal_path(self) -> Path:
        return self.root / JOURNAL_NAME

    @property
    def files_dir(self) -> Path:
        return self.root / FILES_DIR

    def host_path(self, file_id: bytes) -> Path:
        return self.files_dir / file_id.hex()

    # --- creation and locking ---------------------------------------------------------------
    def create_layout(self, header: bytes) -> None:
        """Create the directory skeleton and both header slots.

        Raises:
            VolumeError: the directory already holds a volume or cannot be written.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if self.header_path.exists():
                raise VolumeError(f"{self.root} already holds a sealpod volume")
            self.files_dir.mkdir(exist_ok=True)
            tmp = self.root / (HEADER_NAME + ".tmp")
            with open(tmp, "wb") as f:
                f.write(header + header)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.header_path)
            fsync_dir(self.root)
        except OSError as exc:
            raise VolumeError(f"cannot create volume in {self.root}: {exc.strerror}") from exc

    def lock(self, *, exclusive: bool) -> None:
        """Take an advisory lock so two writers never share a volume.

        Raises:
            VolumeFormatError: the directory holds no volume header.
            VolumeError: the volume is in use by another writer.
        """
        try:
            fd = os.open(self.header_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise VolumeFormatError(f"{self.root} is not a sealpod volume (no header)") from exc
        except OSError as exc:
            raise VolumeError(f"cannot open volume header: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise VolumeError(f"volume {self.root} is in use (locked by another process)") from exc
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # --- header ---------------------------------------------------------------------------
    def read_header(self) -> bytes:
        """Both header slots.

        Raises:
            VolumeFormatError: no header file.
            VolumeCorrupt: the header file has the wrong size.
        """
        try:
            data = self.header_path.read_bytes()
        except FileNotFoundError as exc:
            raise VolumeFormatError(f"{self.root} is not a sealpod volume (no header)") from exc
        except OSError as exc:
            raise VolumeError(f"cannot read volume header: {exc.strerror}") from exc
        if len(data) != fmt.HEADER_FILE_SIZE:
            if not data.startswith(fmt.HEADER_MAGIC):
                raise VolumeFormatError(f"{self.root} is not a sealpod volume (bad header)")
            raise VolumeCorrupt(
                f"volume header is {len(data)} bytes, expected {fmt.HEADER_FILE_SIZE}"
            )
        return data

    def write_header_slot(self, slot: int, data: bytes) -> None:
        """Overwrite one header slot and make it durable."""
        try:
            fd = os.open(self.header_path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                _write_all(fd, data, slot * fmt.HEADER_SLOT_SIZE)
                os.fdatasync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _os_error(exc, "volume header") from exc

    # --- journal --------------------------------------------------------------------------
    def read_journal(self) -> bytes | None:
        try:
            data = self.journal_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise VolumeError(f"cannot read journal: {exc.strerror}") from exc
        return data or None

    def write_journal(self, parts: list[bytes]) -> None:
        """Replace the journal with ``parts`` and make it durable (the commit point)."""
        try:
            fd = os.open(
                self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600
            )
            try:
                offset = 0
                for part in parts:
                    _write_all(fd, part, offset)
                    offset += len(part)
                os.fdatasync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _os_error(exc, "journal") from exc

    def clear_journal(self) -> None:
        """Empty the journal. Not synced: a stale journal is recognised by its counter."""
        with contextlib.suppress(FileNotFoundError):
            os.truncate(self.journal_path, 0)

    # --- host files -----------------------------------------------------------------------
    def list_host_files(self) -> set[bytes]:
        """File ids of every well-named host file under ``files/``."""
        ids: set[bytes] = set()
        try:
            names = os.listdir(self.files_dir)
        except FileNotFoundError as exc:
            raise VolumeCorrupt("volume: the files directory is missing on the host") from exc
        for name in names:
            if len(name) == 2 * fmt.ID_SIZE:
                with contextlib.suppress(ValueError):
                    ids.add(bytes.fromhex(name))
        return ids

    def remove_host_file(self, file_id: bytes) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.host_path(file_id))

    def sync_files_dir(self) -> None:
        try:
            fsync_dir(self.files_dir)
        except OSError as exc:
            raise _os_error(exc, "files directory") from exc
