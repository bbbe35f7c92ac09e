"""Walking, copying and hashing image trees, in parallel.

Speed matters here (a build hashes every trusted byte of the image, and ``sealpod run`` may
verify a bundle at every start): files are read in 1 MiB chunks into a reused per-thread
buffer, and spread over a thread pool. ``hashlib`` and the read/write system calls release
the GIL, so threads give real parallelism; big files are scheduled first and small files are
batched, so that the pool stays busy and per-task overhead stays small.

Safety: nothing here follows a symlink. Entries are read with ``lstat``; files are opened with
``O_NOFOLLOW`` and re-checked with ``fstat`` (so a file swapped for a symlink or FIFO between
the walk and the read is caught), and the size, mode and hash recorded are those of the bytes
actually read — when copying, exactly the bytes written to the bundle.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from sealpod.build.manifest import Observed
from sealpod.errors import ArchiveError, BundleError

CHUNK_SIZE = 1 << 20
#: Small files are handed to the pool in batches of about this many bytes (or _BATCH_FILES).
_BATCH_BYTES = 8 << 20
_BATCH_FILES = 256
# O_NONBLOCK: a FIFO swapped in after the scan must not block open() (no effect on files).
_OPEN_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_OPEN_WRITE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_SPECIAL = {
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFIFO: "FIFO",
    stat.S_IFSOCK: "socket",
}


class Progress(Protocol):
    """Receives progress from the workers (called from several threads)."""

    def start(self, total_bytes: int, label: str) -> None: ...

    def advance(self, amount: int) -> None: ...


def default_workers() -> int:
    """One thread per CPU this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def scan(root: Path, *, strict: bool) -> list[Observed]:
    """Every entry under ``root`` (not ``root`` itself), sorted by path, none followed.

    Paths are the image's (``/app/bin/x``); files are not hashed yet. With ``strict`` (a
    build), special files and names that are not UTF-8 are refused; without it (verifying a
    bundle) they are returned, as ``kind="other"`` / escaped names, to be reported.

    Raises:
        ArchiveError: (strict) a device, FIFO or socket, or a name that is not UTF-8.
        BundleError: ``root`` or a directory under it cannot be read.
    """
    found: list[Observed] = []
    stack: list[tuple[str, str]] = [(os.fspath(root), "")]
    while stack:
        directory, image_dir = stack.pop()
        try:
            with os.scandir(directory) as it:
                children = list(it)
        except OSError as exc:
            raise BundleError(f"cannot read directory {directory}: {exc.strerror}") from exc
        for child in children:
            image_path = f"{image_dir}/{child.name}"
            if strict:
                _check_name(image_path)
            item = _observe(child, image_path)
            if item.kind == "other" and strict:
                raise ArchiveError(
                    f"{image_path} is a {item.detail}; images may not hold special files"
                )
            found.append(item)
            if item.kind == "dir":
                stack.append((child.path, image_path))
    found.sort(key=lambda o: o.path)
    return found


def _check_name(image_path: str) -> None:
    try:
        image_path.encode("utf-8")
    except UnicodeEncodeError as exc:
        shown = image_path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise ArchiveError(f"file name {shown!r} is not valid UTF-8") from exc


def _observe(child: os.DirEntry[str], image_path: str) -> Observed:
    try:
        info = child.stat(follow_symlinks=False)
        fmt = stat.S_IFMT(info.st_mode)
        mode = stat.S_IMODE(info.st_mode)
        if fmt == stat.S_IFDIR:
            return Observed(path=image_path, kind="dir", mode=mode)
        if fmt == stat.S_IFREG:
            return Observed(path=image_path, kind="file", mode=mode, size=info.st_size)
        if fmt == stat.S_IFLNK:
            return Observed(path=image_path, kind="symlink", target=os.readlink(child.path))
    except OSError as exc:
        raise BundleError(f"cannot read {child.path}: {exc.strerror}") from exc
    return Observed(path=image_path, kind="other", detail=_SPECIAL.get(fmt, "special file"))


def hash_tree(
    root: Path,
    *,
    trusted: Callable[[str], bool],
    strict: bool,
    workers: int | None = None,
    progress: Progress | None = None,
    skip: Callable[[Observed], bool] | None = None,
) -> list[Observed]:
    """Scan ``root`` and hash every trusted regular file in place.

    Returns the trusted entries (files with ``sha256`` set), sorted by path. Files for which
    ``skip`` returns true are returned unhashed (``sha256=None``): a verifier uses it to avoid
    reading files that already differ in size, or that the manifest does not list — so a host
    cannot make verification read a planted terabyte.

    Raises:
        ArchiveError: (strict) as :func:`scan`.
        BundleError: a file cannot be read, or changed type while being read.
    """
    items = [o for o in scan(root, strict=strict) if trusted(o.path)]
    base = os.fspath(root)
    files = [o for o in items if o.kind == "file" and not (skip and skip(o))]

    def work(item: Observed, buffer: memoryview) -> Observed:
        return _read_file(base + item.path, item, buffer, None, progress)

    done = _run(files, work, workers, progress, "hashing")
    return [done.get(o.path, o) for o in items]


def copy_tree(
    src: Path,
    dst: Path,
    *,
    trusted: Callable[[str], bool],
    workers: int | None = None,
    progress: Progress | None = None,
) -> list[Observed]:
    """Copy the image tree ``src`` into the new directory ``dst``, hashing trusted files as
    they are written (one read of each file serves both).

    Modes are kept (directories get theirs last, so read-only ones can be filled); owners and
    times are not (the manifest records neither). Returns the trusted entries, sorted by path.

    Raises:
        ArchiveError: a special file or a name that is not UTF-8 in ``src``.
        BundleError: ``dst`` exists, or a file cannot be read or written.
    """
    items = scan(src, strict=True)
    src_base, dst_base = os.fspath(src), os.fspath(dst)
    try:
        os.mkdir(dst_base, 0o700)
        for item in items:
            if item.kind == "dir":
                os.mkdir(dst_base + item.path, 0o700)
            elif item.kind == "symlink":
                os.symlink(item.target or "", dst_base + item.path)
    except OSError as exc:
        raise BundleError(f"cannot create {exc.filename}: {exc.strerror}") from exc

    def work(item: Observed, buffer: memoryview) -> Observed:
        out = dst_base + item.path
        return _read_file(
            src_base + item.path, item, buffer, out, progress, hash_it=trusted(item.path)
        )

    done = _run([o for o in items if o.kind == "file"], work, workers, progress, "copying")
    try:
        for item in reversed(items):
            if item.kind == "dir":
                os.chmod(dst_base + item.path, item.mode)
        os.chmod(dst_base, stat.S_IMODE(os.stat(src_base).st_mode))
    except OSError as exc:
        raise BundleError(f"cannot set the mode of {exc.filename}: {exc.strerror}") from exc
    return [done.get(o.path, o) for o in items if trusted(o.path)]


def _run(
    files: Sequence[Observed],
    work: Callable[[Observed, memoryview], Observed],
    workers: int | None,
    progress: Progress | None,
    label: str,
) -> dict[str, Observed]:
    """Apply ``work`` to every file on a thread pool; largest files first, small ones batched."""
    if progress is not None:
        progress.start(sum(f.size for f in files), label)
    local = threading.local()

    def run_batch(batch: list[Observed]) -> list[Observed]:
        buffer = getattr(local, "buffer", None)
        if buffer is None:
            buffer = local.buffer = memoryview(bytearray(CHUNK_SIZE))
        return [work(item, buffer) for item in batch]

    batches = list(_batches(sorted(files, key=lambda f: f.size, reverse=True)))
    results: dict[str, Observed] = {}
    count = max(1, workers or default_workers())
    if count == 1 or len(batches) <= 1:
        for batch in batches:
            results.update((o.path, o) for o in run_batch(batch))
        return results
    with ThreadPoolExecutor(max_workers=count, thread_name_prefix="sealpod-hash") as pool:
        futures = [pool.submit(run_batch, b) for b in batches]
        try:
            for future in futures:
                results.update((o.path, o) for o in future.result())
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return results


def _batches(files: Sequence[Observed]) -> Iterator[list[Observed]]:
    batch: list[Observed] = []
    size = 0
    for item in files:
        batch.append(item)
        size += item.size
        if size >= _BATCH_BYTES or len(batch) >= _BATCH_FILES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _read_file(
    path: str,
    item: Observed,
    buffer: memoryview,
    copy_to: str | None,
    progress: Progress | None,
    *,
    hash_it: bool = True,
) -> Observed:
    """Read (and copy) one file, hashing what was read; the mode and size are the open
    file's, so a file swapped between the scan and the read cannot slip through."""
    digest = hashlib.sha256() if hash_it else None
    out_fd = in_fd = -1
    try:
        in_fd = os.open(path, _OPEN_READ)
        info = os.fstat(in_fd)
        if not stat.S_ISREG(info.st_mode):
            raise BundleError(f"{item.path} stopped being a regular file while being read")
        if copy_to is not None:
            out_fd = os.open(copy_to, _OPEN_WRITE, 0o600)
        total = 0
        buffers = [buffer]
        while n := os.readv(in_fd, buffers):  # readv fills our buffer: no allocation per read
            chunk = buffer[:n]
            if digest is not None:
                digest.update(chunk)
            if out_fd >= 0:
                _write_all(out_fd, chunk)
            total += n
            if progress is not None and n == CHUNK_SIZE:
                progress.advance(n)
            if n < CHUNK_SIZE and total >= info.st_size:
                break  # a short read of a regular file is its end: skip the empty read
        if progress is not None:
            progress.advance(total % CHUNK_SIZE)
        if out_fd >= 0:
            os.fchmod(out_fd, stat.S_IMODE(info.st_mode))
    except OSError as exc:
        raise BundleError(
            f"cannot {'copy' if copy_to else 'read'} {item.path}: {exc.strerror}"
        ) from exc
    finally:
        for fd in (in_fd, out_fd):
            if fd >= 0:
                os.close(fd)
    return Observed(
        path=item.path,
        kind="file",
        mode=stat.S_IMODE(info.st_mode),
        size=total,
        sha256=digest.hexdigest() if digest is not None else None,
    )


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]
