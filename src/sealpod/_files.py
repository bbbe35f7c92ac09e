"""Reading and writing files in directories sealpod does not own exclusively.

Reading: every input sealpod reads whole (pod spec, policy, evidence, collateral, certificates,
local reports, sim state) goes through :func:`read_limited`: the read is bounded, a directory is
a typed error rather than an ``IsADirectoryError`` traceback, and a named pipe with no writer
cannot hang the process.

Writing: a directory a user named (an ``--out-dir``, a volume's host directory, a world-writable
``/tmp``) may hold entries planted by someone else. Every file sealpod creates or replaces there
goes through the helpers below, which work relative to an open directory descriptor and never
follow a symlink in the last component: :func:`open_dir` / :func:`open_subdir` pin a directory,
:func:`create_new` creates exclusively (``O_CREAT|O_EXCL|O_NOFOLLOW``), :func:`open_regular`
opens an existing regular file without following a link, and :func:`write_atomic` /
:func:`write_new` write whole files. A planted symlink is refused with ``OSError(ELOOP)``
(a message saying so), never written through; callers wrap that once in their error family.

This is the I/O edge (layer 3); pure layers never import it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
from pathlib import Path

from sealpod.errors import SealpodError

#: Files read whole are small; anything a caller does not bound more tightly stops here.
DEFAULT_LIMIT = 16 * 1024 * 1024


def read_limited(
    path: Path | str,
    what: str,
    *,
    limit: int = DEFAULT_LIMIT,
    error: type[SealpodError],
) -> bytes:
    """The bytes of ``path`` (at most ``limit``), or ``error`` saying why not.

    The file is opened with ``O_NONBLOCK`` so that opening a FIFO nobody writes to returns at
    once; for a FIFO or pipe the flag is then cleared, so ``<(command)`` is read to its end while
    a writerless FIFO reads as empty. Directories are refused; character devices are read up to
    the limit like any file.

    Raises:
        SealpodError: of class ``error``: missing, unreadable, a directory, or larger than
            ``limit`` bytes.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise error(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from exc
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise error(f"{what} {str(path)!r} is a directory, expected a file")
        if stat.S_ISFIFO(mode):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(limit + 1 - size, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise error(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    if size > limit:
        raise error(f"{what} {str(path)!r} is larger than {limit} bytes")
    return b"".join(chunks)


#: Flags of every descriptor opened here: no inheritance by children, never through a symlink.
_NOFOLLOW = os.O_CLOEXEC | os.O_NOFOLLOW
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def _symlink_refused(name: str) -> OSError:
    return OSError(errno.ELOOP, "is a symbolic link (sealpod never writes through one)", name)


def _not_regular(name: str) -> OSError:
    return OSError(errno.EINVAL, "is not a regular file", name)


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def open_dir(path: Path | str) -> int:
    """A descriptor of the directory ``path`` as the user named it (symlinks in the path the
    user typed are the user's choice); everything below it is then reached relative to it.

    Raises:
        OSError: missing, not a directory, or unreadable.
    """
    return os.open(path, _DIR_FLAGS)


def open_subdir(dir_fd: int, name: str, *, create: bool = False, mode: int = 0o700) -> int:
    """A descriptor of the directory ``name`` inside ``dir_fd``; a symlink there is refused,
    not followed. With ``create`` it is made (with ``mode``) when absent.

    Raises:
        OSError: ELOOP for a symlink, ENOTDIR for another non-directory, ENOENT when absent
            (without ``create``), or any other error of mkdir/open.
    """
    if create:
        try:
            os.mkdir(name, mode, dir_fd=dir_fd)
        except FileExistsError:
            pass
    try:
        return os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(dir_fd, name):
            raise _symlink_refused(name) from None
        raise


def create_new(dir_fd: int, name: str, *, mode: int = 0o600, flags: int = os.O_WRONLY) -> int:
    """Create ``name`` in ``dir_fd`` exclusively: whatever is there already (a file, a planted
    symlink, a FIFO) makes it fail, so nothing another user prepared is ever written through.

    Raises:
        OSError: EEXIST (ELOOP when the entry is a symlink), or any other error of open.
    """
    try:
        return os.open(name, flags | os.O_CREAT | os.O_EXCL | _NOFOLLOW, mode, dir_fd=dir_fd)
    except FileExistsError:
        if _is_link(dir_fd, name):
            raise _symlink_refused(name) from None
        raise


def open_regular(dir_fd: int, name: str, flags: int, *, mode: int = 0o600) -> int:
    """Open ``name`` in ``dir_fd`` if it is a regular file (``flags`` may add ``O_CREAT``; never
    ``O_TRUNC``: truncate with ``os.ftruncate`` once the descriptor is known to be a file).

    ``O_NONBLOCK`` keeps a planted FIFO from hanging the open; it is cleared again.

    Raises:
        OSError: ELOOP for a symlink, EINVAL for anything but a regular file, ENOENT when absent
            (without ``O_CREAT``), or any other error of open.
    """
    try:
        fd = os.open(name, flags | os.O_NONBLOCK | _NOFOLLOW, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _symlink_refused(name) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _not_regular(name)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write every byte of ``data`` at the descriptor's position (``os.write`` may write less).

    Raises:
        OSError: the write failed.
    """
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view) :]


def write_new(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Create ``path`` exclusively with ``data`` (see :func:`create_new`); on failure the
    partial file is removed.

    Raises:
        OSError: ``path`` exists (ELOOP if it is a symlink) or cannot be written.
    """
    dir_fd = open_dir(path.parent)
    try:
        fd = create_new(dir_fd, path.name, mode=mode)
        try:
            try:
                write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            os.unlink(path.name, dir_fd=dir_fd)
            raise
    finally:
        os.close(dir_fd)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file, never a
    torn one: a uniquely named temporary file beside it (created with ``mode`` before any byte
    is written, ``O_EXCL`` so two writers never share it), fsync, then an atomic rename, all
    relative to one descriptor of the parent directory. A symlink or any other non-regular
    entry at ``path`` is refused, not replaced and not followed (rename never follows one, so
    one planted after the check is replaced, and its target still untouched).

    Raises:
        OSError: ELOOP / EINVAL for a symlink or non-regular entry at ``path``; any error of
            writing (the temporary file is removed).
    """
    name = path.name
    dir_fd = open_dir(path.parent)
    try:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            pass
        else:
            if stat.S_ISLNK(st.st_mode):
                raise _symlink_refused(str(path))
            if not stat.S_ISREG(st.st_mode):
                raise _not_regular(str(path))
        tmp = f".{name}.{secrets.token_hex(6)}.tmp"
        fd = create_new(dir_fd, tmp, mode=mode)
        try:
            try:
                write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            os.fsync(dir_fd)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
