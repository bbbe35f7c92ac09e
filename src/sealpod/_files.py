"""Reading a small file a user named on the command line, without trusting what it is.

Every input sealpod reads whole (pod spec, policy, evidence, collateral, certificates, local
reports, sim state) goes through :func:`read_limited`: the read is bounded, a directory is a
typed error rather than an ``IsADirectoryError`` traceback, and a named pipe with no writer
cannot hang the process. This is the I/O edge (layer 3); pure layers never import it.
"""

from __future__ import annotations

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


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file, never a
    torn one: a uniquely named temporary file beside it (created with ``mode`` before any byte
    is written, ``O_EXCL`` so two writers never share it), fsync, then an atomic rename.

    Raises:
        OSError: it cannot be written (the temporary file is removed).
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(data)
            while view:  # os.write may write less than asked
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
