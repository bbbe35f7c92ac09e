"""Mount a volume with FUSE (pyfuse3 + trio; the ``fuse`` extra).

The kernel's page cache sits in front (writeback caching on), so mmap, small writes and
re-reads behave as on a local file system; ``fsync`` commits the whole volume. Integrity
failures become ``EIO``; namespace errors keep their errno. A background task commits every
few seconds when something changed, like a journaling file system's commit interval.

Node ids: the root is 1; every other inode is ``generation << 24 | record`` so that a record
reused after a delete never aliases an inode the kernel still caches.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import importlib
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sealpod._files import read_limited, write_atomic
from sealpod.errors import SealpodError, VolumeError
from sealpod.settings import sealpod_home
from sealpod.volume.info import VolumeStat
from sealpod.volume.store import VolumeDir
from sealpod.volume.volume import Volume

# The package works without the fuse extra; mounting then says why it cannot. The modules are
# typed Any in both cases, so the type check reads the same with the extra and without it
# (scripts/mypy_without_extras.py checks the second case).
pyfuse3: Any = None
trio: Any = None
try:
    pyfuse3 = importlib.import_module("pyfuse3")
    trio = importlib.import_module("trio")
    _IMPORT_ERROR: str | None = None
except ImportError as exc:  # pragma: no cover - depends on the environment
    pyfuse3 = trio = None
    _IMPORT_ERROR = f"pyfuse3/trio are not installed ({exc}); install sealpod[fuse]"

log = logging.getLogger("sealpod.volume.fuse")
P = ParamSpec("P")
R = TypeVar("R")
_RECORD_BITS = 24
_RECORD_MASK = (1 << _RECORD_BITS) - 1
ROOT_NODE = 1
ATTR_TIMEOUT_SECS = 60.0
COMMIT_INTERVAL_SECS = 5.0
READ_AHEAD_KIB = 1024
READ_AHEAD_MIN = 512 * 1024  # reads this large are taken as sequential streaming


def unavailable_reason() -> str | None:
    """Why FUSE mounting cannot work here, or None when it can."""
    if _IMPORT_ERROR is not None:
        return _IMPORT_ERROR
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed (Debian package fuse3)"
    return None


def _translate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """OSError -> its errno; any volume error (corruption, I/O) -> EIO, logged."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except SealpodError as exc:  # also a counter store's own errors (KmsError)
            log.error("%s: %s", fn.__name__, exc.message)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


_Operations: Any = pyfuse3.Operations if pyfuse3 is not None else object


class VolumeOperations(_Operations):  # type: ignore[misc]  # pyfuse3 has no type information
    """pyfuse3 request handlers over one open :class:`Volume`."""

    enable_writeback_cache = True

    def __init__(self, volume: Volume) -> None:
        super().__init__()
        self.volume = volume
        self._handles: dict[int, int] = {}
        self._next_fh = 1
        self.nursery: Any = None  # set by the serving loop; runs read-ahead tasks
        # One decrypted chunk ahead of a sequential reader: (inode, offset, data).
        self._ahead: tuple[int, int, bytes | bytearray] | None = None

    # --- node ids -----------------------------------------------------------------------
    def _ino(self, node: int) -> int:
        if node == ROOT_NODE:
            return 0
        record, generation = node & _RECORD_MASK, node >> _RECORD_BITS
        inode = self.volume.index.inodes.get(record)  # one thread: no lock needed to peek
        if inode is None or inode.generation != generation:
            raise OSError(errno.ENOENT, "stale inode")
        return record

    @staticmethod
    def _node(st: VolumeStat) -> int:
        return ROOT_NODE if st.ino == 0 else (st.generation << _RECORD_BITS) | st.ino

    def _attrs(self, st: VolumeStat) -> Any:
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = self._node(st)
        attrs.generation = st.generation
        attrs.entry_timeout = ATTR_TIMEOUT_SECS
        attrs.attr_timeout = ATTR_TIMEOUT_SECS
        attrs.st_mode = st.mode
        attrs.st_nlink = st.nlink
        attrs.st_uid = st.uid
        attrs.st_gid = st.gid
        attrs.st_size = st.size
        attrs.st_blksize = 4096
        attrs.st_blocks = -(-st.size // 512)
        attrs.st_atime_ns = st.mtime_ns
        attrs.st_mtime_ns = st.mtime_ns
        attrs.st_ctime_ns = st.ctime_ns
        return attrs

    def _open_handle(self, ino: int) -> int:
        self.volume.pin(ino)
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = ino
        return fh

    # --- lookups and attributes ---------------------------------------------------------
    @_translate
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> Any:
        parent = self._ino(parent_inode)
        if name == b".":
            return self._attrs(self.volume.getattr(parent))
        if name == b"..":
            return self._attrs(self.volume.getattr(self.volume.index.get(parent).parent))
        return self._attrs(self.volume.lookup(parent, name))

    @_translate
    async def getattr(self, inode: int, ctx: Any = None) -> Any:
        return self._attrs(self.volume.getattr(self._ino(inode)))

    @_translate
    async def setattr(self, inode: int, attr: Any, fields: Any, fh: int | None, ctx: Any) -> Any:
        self._ahead = None
        ino = self._ino(inode)
        st = self.volume.setattr(
            ino,
            mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            size=attr.st_size if fields.update_size else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
        )
        return self._attrs(st)

    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        return None

    @_translate
    async def statfs(self, ctx: Any) -> Any:
        host = os.statvfs(self.volume.root)
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = host.f_frsize
        data.f_blocks, data.f_bfree, data.f_bavail = host.f_blocks, host.f_bfree, host.f_bavail
        data.f_files, data.f_ffree, data.f_favail = host.f_files, host.f_ffree, host.f_favail
        data.f_namemax = 255
        return data

    # --- directories --------------------------------------------------------------------
    @_translate
    async def opendir(self, inode: int, ctx: Any) -> int:
        ino = self._ino(inode)
        self.volume.readdir(ino)  # ENOTDIR early
        return ino

    @_translate
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        entries = self.volume.readdir(fh)
        for n in range(start_id, len(entries)):
            name, st = entries[n]
            if not pyfuse3.readdir_reply(token, name, self._attrs(st), n + 1):
                break

    async def releasedir(self, fh: int) -> None:
        return None

    @_translate
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> Any:
        st = self.volume.mknod(
            self._ino(parent_inode), name, kind="dir", mode=mode & ~ctx.umask, uid=ctx.uid,
            gid=ctx.gid,
        )  # fmt: skip
        return self._attrs(st)

    @_translate
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        self.volume.rmdir_at(self._ino(parent_inode), name)

    @_translate
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        self._ahead = None
        self.volume.unlink_at(self._ino(parent_inode), name)

    @_translate
    async def rename(
        self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes,
        flags: int, ctx: Any,
    ) -> None:  # fmt: skip
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise OSError(errno.EINVAL, "RENAME_EXCHANGE is not supported")
        self.volume.rename_at(
            self._ino(parent_inode_old), name_old, self._ino(parent_inode_new), name_new,
            replace=not flags & pyfuse3.RENAME_NOREPLACE,
        )  # fmt: skip

    @_translate
    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any) -> Any:
        self._ahead = None
        st = self.volume.symlink(self._ino(parent_inode), name, target, uid=ctx.uid, gid=ctx.gid)
        return self._attrs(st)

    @_translate
    async def readlink(self, inode: int, ctx: Any) -> bytes:
        return self.volume.readlink(self._ino(inode))

    @_translate
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any) -> Any:
        raise OSError(errno.EPERM, "hard links are not supported")

    @_translate
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any) -> Any:
        self._ahead = None
        if not stat.S_ISREG(mode):
            raise OSError(errno.EPERM, "only regular files, directories and symlinks")
        st = self.volume.mknod(
            self._ino(parent_inode), name, kind="file", mode=mode & ~ctx.umask, uid=ctx.uid,
            gid=ctx.gid,
        )  # fmt: skip
        return self._attrs(st)

    # --- files --------------------------------------------------------------------------
    @_translate
    async def open(self, inode: int, flags: int, ctx: Any) -> Any:
        ino = self._ino(inode)
        if self.volume.getattr(ino).kind != "file":
            raise OSError(errno.EISDIR, "not a regular file")
        if flags & os.O_TRUNC:
            self.volume.setattr(ino, size=0)
        return pyfuse3.FileInfo(fh=self._open_handle(ino))

    @_translate
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any
    ) -> tuple[Any, Any]:
        self._ahead = None
        st = self.volume.mknod(
            self._ino(parent_inode), name, kind="file", mode=mode & ~ctx.umask, uid=ctx.uid,
            gid=ctx.gid,
        )  # fmt: skip
        return pyfuse3.FileInfo(fh=self._open_handle(st.ino)), self._attrs(st)

    @_translate
    async def read(self, fh: int, off: int, size: int) -> bytes | bytearray:
        ino = self._handles[fh]
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == ino and ahead[1] == off and len(ahead[2]) == size:
            data = ahead[2]
        else:
            data = self.volume.pread_buffer(ino, off, size)
        if size >= READ_AHEAD_MIN and len(data) == size and self.nursery is not None:
            # Decrypt the next chunk right after this reply goes out, while the kernel copies
            # it: the single-threaded server then overlaps its work with the reader's.
            self.nursery.start_soon(self._read_ahead, ino, off + size, size)
        return data

    async def _read_ahead(self, ino: int, off: int, size: int) -> None:
        try:
            data = self.volume.pread_buffer(ino, off, size)
        except (OSError, VolumeError):
            return  # the real read will report it
        if len(data) == size:
            self._ahead = (ino, off, data)

    @_translate
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        self._ahead = None
        return self.volume.pwrite(self._handles[fh], off, buf)

    async def flush(self, fh: int) -> None:
        return None

    @_translate
    async def release(self, fh: int) -> None:
        self._ahead = None
        ino = self._handles.pop(fh, None)
        if ino is not None:
            self.volume.unpin(ino)

    @_translate
    async def fsync(self, fh: int, datasync: bool) -> None:
        self.volume.sync()

    @_translate
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        self.volume.sync()


async def _periodic_commit(volume: Volume, interval: float) -> None:
    while True:
        await trio.sleep(interval)
        if volume.has_pending_changes:
            try:
                volume.sync()
            except SealpodError as exc:
                log.error("periodic commit failed: %s", exc.message)
                if volume.broken:  # an I/O failure: every request now gets EIO
                    return
                # Refused before anything changed (the volume stays usable): try again later.


CATCH_UP_MIN_SECS = 0.005  # the timer's shortest period (a 1 ms window must not spin)


async def _counter_catch_up(volume: Volume) -> None:
    """With a rollback window: keep the freshness store within the window while idle."""
    while True:
        await trio.sleep(max(volume.rollback_window / 4, CATCH_UP_MIN_SECS))
        try:
            volume.catch_up_counter()
        except SealpodError as exc:  # VolumeError, or the KMS store's KmsError
            log.error("recording the volume counter failed: %s", exc.message)
            return  # the volume is broken: every request now gets EIO


async def _serve(volume: Volume, ops: VolumeOperations, interval: float) -> None:
    async with trio.open_nursery() as nursery:

        async def on_signals() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
                async for _ in sigs:
                    pyfuse3.terminate()
                    return

        nursery.start_soon(on_signals)
        ops.nursery = nursery
        nursery.start_soon(_periodic_commit, volume, interval)
        if volume.rollback_window > 0:
            nursery.start_soon(_counter_catch_up, volume)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


def mount(
    volume: Volume,
    mountpoint: Path,
    *,
    ready: Callable[[], None] | None = None,
    allow_other: bool = False,
    commit_interval: float = COMMIT_INTERVAL_SECS,
) -> None:
    """Serve ``volume`` at ``mountpoint`` until it is unmounted or the process gets SIGTERM /
    SIGINT; then commit and close the volume.

    Raises:
        VolumeError: FUSE is unavailable or the mount fails.
    """
    reason = unavailable_reason()
    if reason is not None:
        raise VolumeError(f"cannot mount: {reason}")
    options = set(pyfuse3.default_options)
    # The source names the absolute volume directory so that `unmount` can wait for its lock.
    source = str(Path(volume.root).resolve()).replace("\\", "\\\\").replace(",", "\\,")
    options |= {f"fsname=sealpod:{source}", "subtype=sealpod"}
    if allow_other:
        options.add("allow_other")
    ops = VolumeOperations(volume)
    target = os.path.realpath(mountpoint)
    status = _status_file(Path(volume.root))
    _record(status, RUNNING)  # replaced by the outcome once the final commit is done
    try:
        pyfuse3.init(ops, str(mountpoint), options)
    except RuntimeError as exc:
        status.unlink(missing_ok=True)
        volume.close()
        raise VolumeError(f"cannot mount at {mountpoint}: {exc}") from exc
    try:
        threading.Thread(target=_tune_readahead, args=(target,), daemon=True).start()
        if ready is not None:
            ready()
        trio.run(_serve, volume, ops, commit_interval)
    finally:
        try:
            pyfuse3.close(unmount=True)
        finally:
            _close_and_record(volume, status)


def _status_file(root: Path) -> Path:
    """Where a mount records that its last commit failed, for ``unmount`` to report: in the
    user's private state directory (the message may name logical paths, which the host must
    not see), keyed by the volume directory."""
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:32]
    return sealpod_home() / "volume-mounts" / f"{digest}.failed"


def _close_and_record(volume: Volume, status: Path) -> None:
    """Close (final commit); if it or an earlier commit failed, record why for ``unmount``.

    Raises:
        VolumeError: the final commit failed.
    """
    failure: str | None = None
    try:
        volume.close()
    except SealpodError as exc:  # VolumeError, or the KMS store's KmsError
        failure = f"the final commit failed: {exc.message}"
        raise
    finally:
        if failure is None and volume.broken:
            failure = "a commit failed while mounted (see the mount's log)"
        if failure is None:
            with contextlib.suppress(OSError):
                status.unlink()
        elif volume.unrecorded:
            _record(status, failure + "; the data is on disk, but the counter store lacks the "
                    "last commits: a copy from before them would not be refused")  # fmt: skip
        else:
            _record(status, failure + "; changes since the last good commit are lost")


RUNNING = "running"


def _record(status: Path, text: str) -> None:
    try:
        status.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(status, text.encode())
    except OSError as exc:
        log.error("cannot record the mount's state in %s: %s", status, exc)


def _tune_readahead(target: str) -> None:
    """Ask the kernel to read ahead 1 MiB on this mount (its own backing device), so that
    streaming reads arrive as 1 MiB requests instead of 128 KiB ones: the per-request cost of a
    Python FUSE server then matters 8 times less. Best effort (needs root).

    Runs in a helper thread: the stat() below returns only once the serving loop has answered
    the kernel's INIT (which would otherwise reset the value) and this GETATTR.
    """
    try:
        os.stat(target)
    except OSError:
        return
    device = None
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and _unescape(fields[4]) == target:
                device = fields[2]  # major:minor of the mount's (anonymous) device
    if device is None:
        return
    knob = Path(f"/sys/class/bdi/{device}/read_ahead_kb")
    try:
        knob.write_text(f"{READ_AHEAD_KIB}\n")
    except OSError as exc:
        log.info("cannot raise readahead on %s: %s", target, exc)


def _unescape(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mount_source(mountpoint: Path) -> str | None:
    target = os.path.realpath(mountpoint)
    with open("/proc/self/mounts", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 2 and _unescape(fields[1]) == target:
                return _unescape(fields[0])
    return None


def unmount(mountpoint: Path, *, lazy: bool = False, timeout_secs: float = 60.0) -> None:
    """Unmount and wait until the serving process has committed and released the volume.

    Raises:
        VolumeError: not a sealpod mount, fusermount3 failed, the volume stayed locked, or the
            serving process's last commit failed (changes since the previous one are lost).
    """
    source = _mount_source(mountpoint)
    if source is None or not source.startswith("sealpod:"):
        raise VolumeError(f"{mountpoint} is not a mounted sealpod volume")
    tool = shutil.which("fusermount3")
    if tool is None:
        raise VolumeError("fusermount3 is not installed (Debian package fuse3)")
    command = [tool, "-u", *(["-z"] if lazy else []), str(mountpoint)]
    # A fixed tool and a path argument, no shell.
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise VolumeError(f"fusermount3 failed: {done.stderr.strip() or done.returncode}")
    vdir = VolumeDir(Path(source.removeprefix("sealpod:")))
    deadline = time.monotonic() + timeout_secs
    while True:
        try:
            vdir.lock(exclusive=True)
        except VolumeError:
            vdir.close()
            if time.monotonic() > deadline:
                raise VolumeError(
                    f"unmounted, but the volume {vdir.root} is still in use after "
                    f"{timeout_secs:.0f} s"
                ) from None
            time.sleep(0.05)
            continue
        vdir.close()
        _await_outcome(_status_file(vdir.root))
        return


def _await_outcome(status: Path, wait_secs: float = 10.0) -> None:
    """After the volume's lock is free: the serving process's last word on its final commit.

    Raises:
        VolumeError: it failed, or the process ended without finishing it (killed).
    """
    deadline = time.monotonic() + wait_secs
    while True:
        try:
            raw = read_limited(status, "mount status", limit=4096, error=VolumeError)
        except VolumeError:
            return  # removed by the serving process: the final commit succeeded
        text = raw.decode(errors="replace")
        if text != RUNNING:
            status.unlink(missing_ok=True)
            raise VolumeError(f"unmounted, but {text}")
        if time.monotonic() > deadline:
            status.unlink(missing_ok=True)
            raise VolumeError(
                "unmounted, but the serving process ended without its final commit (was it "
                "killed?); changes since its last commit are lost"
            )
        time.sleep(0.05)
