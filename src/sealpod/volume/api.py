"""The path API of a volume (a mixin over its inode API) and :class:`VolumeFile`.

Programs use paths (``vol.open("db/pages", "r+b")``, ``vol.rename(a, b)``); the FUSE adapter
uses the inode API of :class:`sealpod.volume.volume.Volume` directly. Paths are relative to the
volume root (a leading ``/`` is ignored); ``.`` components are dropped and ``..`` is refused.
"""

from __future__ import annotations

import errno
import functools
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar

from sealpod.volume import format as fmt
from sealpod.volume.info import VolumeStat
from sealpod.volume.namespace import Index, Inode, check_name

if TYPE_CHECKING:
    from sealpod.volume.pfile import ProtectedFile

P = ParamSpec("P")
R = TypeVar("R")


def _oserror(code: int, name: object = None) -> OSError:
    return OSError(code, os.strerror(code), None if name is None else str(name))


class _Inodes(Protocol):
    """What the path API needs from a volume (its inode API)."""

    index: Index

    @property
    def _lock(self) -> AbstractContextManager[Any]: ...
    def _check_usable(self) -> None: ...
    def _check_writable(self) -> None: ...
    def _new(self, parent: int, name: bytes, kind: str, mode: int, uid: int, gid: int) -> Inode: ...
    def _pf(self, node: Inode) -> ProtectedFile: ...
    def _stat(self, node: Inode) -> VolumeStat: ...
    def setattr(
        self,
        ino: int,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        size: int | None = None,
        mtime_ns: int | None = None,
    ) -> VolumeStat: ...
    def unlink_at(self, parent: int, name: bytes) -> None: ...
    def rmdir_at(self, parent: int, name: bytes) -> None: ...
    def rename_at(
        self, parent: int, name: bytes, new_parent: int, new_name: bytes, *, replace: bool = True
    ) -> None: ...
    def pin(self, ino: int) -> None: ...
    def unpin(self, ino: int) -> None: ...
    def pread(self, ino: int, offset: int, length: int) -> bytes: ...
    def pwrite(self, ino: int, offset: int, data: bytes | bytearray | memoryview) -> int: ...
    def file_size(self, ino: int) -> int: ...
    def sync(self) -> None: ...
    def open(self, path: str | bytes, mode: str = "rb") -> VolumeFile: ...


S = TypeVar("S", bound=_Inodes)


def _guarded(fn: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """Hold the volume's lock (and check it is usable) for the whole path operation."""

    def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self._lock:
            self._check_usable()
            return fn(self, *args, **kwargs)

    functools.update_wrapper(wrapper, fn)
    return wrapper


def _split(path: str | bytes) -> list[bytes]:
    raw = path.encode("utf-8", "surrogateescape") if isinstance(path, str) else path
    parts = [p for p in raw.split(b"/") if p and p != b"."]
    for part in parts:
        if part == b"..":
            raise _oserror(errno.EINVAL, raw.decode("utf-8", "replace"))
        check_name(part)
    return parts


def _resolve(index: Index, path: str | bytes) -> Inode:
    node = index.inodes[fmt.ROOT_INO]
    for part in _split(path):
        node = index.lookup(node.ino, part)
    return node


def _parent_of(index: Index, path: str | bytes) -> tuple[Inode, bytes]:
    parts = _split(path)
    if not parts:
        raise _oserror(errno.EINVAL, "the root has no parent")
    parent = index.inodes[fmt.ROOT_INO]
    for part in parts[:-1]:
        parent = index.lookup(parent.ino, part)
    if parent.kind != fmt.KIND_DIR:
        raise _oserror(errno.ENOTDIR, path)
    return parent, parts[-1]


class PathApi:
    """Path-level operations, mixed into :class:`~sealpod.volume.volume.Volume`."""

    @_guarded
    def stat(self: _Inodes, path: str | bytes) -> VolumeStat:
        """Raises: OSError(ENOENT / ENOTDIR)."""
        return self._stat(_resolve(self.index, path))

    @_guarded
    def exists(self: _Inodes, path: str | bytes) -> bool:
        try:
            _resolve(self.index, path)
        except OSError:
            return False
        return True

    @_guarded
    def listdir(self: _Inodes, path: str | bytes = "") -> list[str]:
        """Names in a directory, sorted. Raises: OSError(ENOENT / ENOTDIR)."""
        node = _resolve(self.index, path)
        entries = self.index.children.get(node.ino)
        if entries is None:
            raise _oserror(errno.ENOTDIR, path)
        return sorted(n.decode("utf-8", "surrogateescape") for n in entries)

    @_guarded
    def walk(self: _Inodes) -> Iterator[tuple[str, VolumeStat]]:
        """Every inode below the root as (logical path, stat), parents before children."""
        out: list[tuple[str, VolumeStat]] = []
        stack = [fmt.ROOT_INO]
        while stack:
            ino = stack.pop()
            for _name, child in sorted(self.index.children[ino].items(), reverse=True):
                node = self.index.inodes[child]
                path = self.index.path_of(child).decode("utf-8", "surrogateescape")
                out.append((path, self._stat(node)))
                if node.kind == fmt.KIND_DIR:
                    stack.append(child)
        return iter(out)

    @_guarded
    def mkdir(
        self: _Inodes, path: str | bytes, mode: int = 0o755, *, parents: bool = False,
        exist_ok: bool = False,
    ) -> None:  # fmt: skip
        """Create a directory. Raises: OSError EEXIST, ENOENT, ENOTDIR, EROFS."""
        self._check_writable()
        parts = _split(path)
        if not parts:
            if exist_ok:
                return
            raise _oserror(errno.EEXIST, path)
        node = self.index.inodes[fmt.ROOT_INO]
        for n, part in enumerate(parts):
            last = n == len(parts) - 1
            child = self.index.children.get(node.ino, {}).get(part)
            if child is not None:
                node = self.index.inodes[child]
                if last and not (exist_ok and node.kind == fmt.KIND_DIR):
                    raise _oserror(errno.EEXIST, path)
                continue
            if not last and not parents:
                raise _oserror(errno.ENOENT, path)
            node = self._new(node.ino, part, "dir", mode, os.getuid(), os.getgid())

    @_guarded
    def unlink(self: _Inodes, path: str | bytes) -> None:
        """Remove a file. Raises: OSError ENOENT, EISDIR, EROFS."""
        parent, name = _parent_of(self.index, path)
        self.unlink_at(parent.ino, name)

    @_guarded
    def rmdir(self: _Inodes, path: str | bytes) -> None:
        """Remove an empty directory. Raises: OSError ENOENT, ENOTDIR, ENOTEMPTY, EROFS."""
        parent, name = _parent_of(self.index, path)
        self.rmdir_at(parent.ino, name)

    @_guarded
    def rename(self: _Inodes, old: str | bytes, new: str | bytes) -> None:
        """Rename (replacing a file at ``new``). Raises: OSError as for :meth:`rename_at`."""
        p1, n1 = _parent_of(self.index, old)
        p2, n2 = _parent_of(self.index, new)
        self.rename_at(p1.ino, n1, p2.ino, n2)

    @_guarded
    def truncate(self: _Inodes, path: str | bytes, size: int) -> None:
        """Set a file's size. Raises: OSError ENOENT, EISDIR, EROFS; VolumeCorrupt."""
        self.setattr(_resolve(self.index, path).ino, size=size)

    @_guarded
    def open(self: _Inodes, path: str | bytes, mode: str = "rb") -> VolumeFile:
        """Open a file like :func:`open` in binary mode: r, r+, w, w+, a, a+, x, x+ (+ "b").

        Raises:
            ValueError: text mode or an unknown mode.
            OSError: ENOENT, EEXIST (x), EISDIR, EROFS. VolumeCorrupt.
        """
        flags = mode.replace("b", "")
        if flags not in ("r", "r+", "w", "w+", "a", "a+", "x", "x+"):
            raise ValueError(f"mode is {mode!r}, expected a binary mode such as 'rb' or 'r+b'")
        readable = flags.startswith("r") or "+" in flags
        writable = not flags == "r"
        if writable:
            self._check_writable()
        parent, name = _parent_of(self.index, path)
        ino = self.index.children[parent.ino].get(name)
        if ino is None:
            if flags.startswith("r"):
                raise _oserror(errno.ENOENT, path)
            node = self._new(parent.ino, name, "file", 0o644, os.getuid(), os.getgid())
        else:
            node = self.index.inodes[ino]
            if flags.startswith("x"):
                raise _oserror(errno.EEXIST, path)
            if node.kind == fmt.KIND_DIR:
                raise _oserror(errno.EISDIR, path)
            self._pf(node)  # authenticate on open, not on first read
            if flags.startswith("w"):
                self.setattr(node.ino, size=0)
        return VolumeFile(
            self, node.ino, readable=readable, writable=writable, append=flags.startswith("a")
        )

    def read_file(self: _Inodes, path: str | bytes) -> bytes:
        """The whole content of a file. Raises: OSError; VolumeCorrupt."""
        with self.open(path, "rb") as f:
            return f.read()

    def write_file(self: _Inodes, path: str | bytes, data: bytes) -> None:
        """Create or replace a file's content (not synced; call :meth:`sync`)."""
        with self.open(path, "wb") as f:
            f.write(data)


class VolumeFile:
    """A file opened through :meth:`Volume.open`; binary, seekable, not buffered."""

    def __init__(
        self, volume: _Inodes, ino: int, *, readable: bool, writable: bool, append: bool
    ) -> None:
        self._volume = volume
        self.ino = ino
        self.readable = readable
        self.writable = writable
        self._append = append
        self._pos = 0
        self.closed = False
        volume.pin(ino)

    def __enter__(self) -> VolumeFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, want_write: bool = False) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if want_write and not self.writable:
            raise _oserror(errno.EBADF)
        if not want_write and not self.readable:
            raise _oserror(errno.EBADF)

    def read(self, size: int = -1) -> bytes:
        self._check()
        if size < 0:
            size = max(0, self._volume.file_size(self.ino) - self._pos)
        data = self._volume.pread(self.ino, self._pos, size)
        self._pos += len(data)
        return data

    def pread(self, offset: int, size: int) -> bytes:
        self._check()
        return self._volume.pread(self.ino, offset, size)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._check(want_write=True)
        if self._append:
            self._pos = self._volume.file_size(self.ino)
        n = self._volume.pwrite(self.ino, self._pos, data)
        self._pos += n
        return n

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> int:
        self._check(want_write=True)
        return self._volume.pwrite(self.ino, offset, data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos}.get(whence)
        if base is None:
            base = self._volume.file_size(self.ino)
        if base + offset < 0:
            raise _oserror(errno.EINVAL)
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def truncate(self, size: int | None = None) -> int:
        self._check(want_write=True)
        size = self._pos if size is None else size
        self._volume.setattr(self.ino, size=size)
        return size

    def fsync(self) -> None:
        """Commit the whole volume (every file's changes, atomically) and wait for it."""
        if self.closed:
            raise ValueError("I/O operation on closed file")
        self._volume.sync()

    def flush(self) -> None:
        """Nothing to do: writes go straight to the volume's cache."""

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._volume.unpin(self.ino)
