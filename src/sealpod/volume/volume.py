"""An open volume: the inode API, the node cache, and commits.

``open_volume(dir, key, counter=...)`` (in :mod:`sealpod.volume.lifecycle`) returns a
:class:`Volume`. It offers a path API for
programs (``open``, ``read_file``, ``write_file``, ``mkdir``, ``listdir``, ``stat``, ``rename``,
``unlink``, ``truncate``, ``sync``) and an inode API for the FUSE adapter (``lookup``,
``getattr``, ``pread``, ``pwrite``, ``rename_at``...). Writes stay in memory until ``sync()``
(or a file's ``fsync()``, or memory pressure) commits them; a commit is atomic across all files
of the volume (see :mod:`sealpod.volume.commit`) and advances the volume's version counter.

Errors: ``VolumeCorrupt`` for anything that fails authentication (tampering, rollback of single
files, a wrong key); ``RollbackDetected`` when the whole volume is older than its counter says;
``VolumeFormatError`` for a directory that is not a volume; ordinary ``OSError`` (ENOENT,
EEXIST, ENOTEMPTY, ...) for namespace mistakes.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat as statmod
import threading
import time
from collections import OrderedDict
from pathlib import Path

from sealpod.errors import VolumeCorrupt, VolumeError
from sealpod.volume import commit as cm
from sealpod.volume import format as fmt
from sealpod.volume.api import PathApi, _guarded, _oserror
from sealpod.volume.cache import NodeCache
from sealpod.volume.freshness import Freshness
from sealpod.volume.info import VolumeInfo, VolumeStat
from sealpod.volume.namespace import Index, Inode, check_name
from sealpod.volume.pfile import ProtectedFile
from sealpod.volume.store import SYNCFS_AFTER, VolumeDir, syncfs

DEFAULT_CACHE_BYTES = 64 << 20
DEFAULT_DIRTY_BYTES = 64 << 20
MAX_IDLE_FILES = 256  # clean loaded files kept (with their descriptors and cached nodes)
MAX_DIRTY_FILES = 2048  # more changed files trigger a commit: ~30 KiB each stays in memory
MAX_OPEN_FDS = 512  # host descriptors kept open; older ones are closed and reopened on demand
_FD_RELEASE_AFTER = 256
_now = time.monotonic  # the rollback window's clock (tests replace it)

_KIND_NAMES = {fmt.KIND_FILE: "file", fmt.KIND_DIR: "dir", fmt.KIND_SYMLINK: "symlink"}
_KIND_BITS = {fmt.KIND_FILE: statmod.S_IFREG, fmt.KIND_DIR: statmod.S_IFDIR,
              fmt.KIND_SYMLINK: statmod.S_IFLNK}  # fmt: skip


class Volume(PathApi):
    """An open volume. Thread-safe (one lock); use as a context manager or call ``close()``.

    Create and open volumes with :func:`sealpod.volume.create_volume` and
    :func:`sealpod.volume.open_volume`.
    """

    def __init__(
        self,
        *,
        vdir: VolumeDir,
        header: cm.Header,
        volume_key: bytes,
        freshness: Freshness,
        fresh_value: int,
        readonly: bool,
        overlay: dict[bytes, dict[int, bytes]],
        cache_bytes: int,
        dirty_bytes: int,
        rollback_window: float = 0.0,
    ) -> None:
        self._lock = threading.RLock()
        self._vdir = vdir
        self._header = header
        self._log = cm.CommitLog(vdir)
        self._volume_key = volume_key
        self._freshness = freshness
        self._fresh_value = fresh_value
        #: seconds the freshness store may lag behind commits (0: every commit waits for it)
        self.rollback_window = rollback_window
        self._lag_since: float | None = None  # when the first commit the store lacks was made
        #: close() committed everything but could not record the window's last commits
        self.unrecorded = False
        self.readonly = readonly
        self._overlay = overlay
        self._cache = NodeCache(cache_bytes)
        # A commit journals at most every dirty node plus its MHT nodes: stay far below the
        # format's journal limit, which recovery enforces.
        self._dirty_limit = min(max(64, dirty_bytes // fmt.NODE_SIZE), fmt.MAX_JOURNAL_ENTRIES // 4)
        self._keys = header.keys
        self._broken: BaseException | None = None
        self._closed = False
        self._files: dict[int, ProtectedFile] = {}
        # Loaded files that are clean and not open: closed, oldest first, beyond MAX_IDLE_FILES.
        self._idle: OrderedDict[int, None] = OrderedDict()
        self._fds: OrderedDict[int, None] = OrderedDict()  # files recently given a descriptor
        self._dirty: set[int] = set()
        self._pins: dict[int, int] = {}
        self._deleted: set[bytes] = set()
        index_id = header.slot.index_file_id
        index_pf = ProtectedFile.load(
            keys=self._keys,
            cache=self._cache,
            file_id=index_id,
            file_kind=fmt.FILE_KIND_INDEX,
            path=b"",
            host_path=vdir.host_path(index_id),
            expected_tag=header.slot.index_meta_tag,
            readonly=readonly,
            overlay=overlay.get(index_id),
        )
        try:
            self.index = Index.from_bytes(index_pf.read(0, index_pf.size))
        except BaseException:
            index_pf.close()
            raise
        self._index_pf = index_pf

    def __repr__(self) -> str:
        return f"Volume({str(self._vdir.root)!r}, id={self.volume_id}, readonly={self.readonly})"

    def __enter__(self) -> Volume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def volume_id(self) -> str:
        return self._header.slot.volume_id.hex()

    @property
    def counter(self) -> int:
        return self._header.counter

    @property
    def root(self) -> Path:
        return self._vdir.root

    @property
    def has_pending_changes(self) -> bool:
        """Whether anything changed since the last commit."""
        with self._lock:
            return bool(self._dirty or self.index.dirty or self._deleted)

    @property
    def broken(self) -> bool:
        """Whether a commit failed part-way (the volume must be reopened to recover)."""
        return self._broken is not None

    def _check_usable(self) -> None:
        if self._closed:
            raise VolumeError("volume is closed")
        if self._broken is not None:
            raise VolumeError(
                "volume is unusable after a failed commit; reopen it to recover"
            ) from self._broken

    def _check_writable(self) -> None:
        if self.readonly:
            raise _oserror(errno.EROFS)

    # --- session, commit ------------------------------------------------------------------
    def _start_session(self) -> None:
        """Reclaim orphans and stray host files; advance the counter by two."""
        for node in self.index.orphans():
            self.index.release_orphan(node)
            self._deleted.add(node.file_id)
        for file_id in self._vdir.list_host_files() - self.live_file_ids():
            self._vdir.remove_host_file(file_id)
        self._commit(step=2, force=True, strict=True)

    @_guarded
    def sync(self) -> None:
        """Commit every change of every file, atomically; returns once it is durable and (unless
        a rollback window lets it wait) recorded in the counter store.

        Raises:
            VolumeError: an I/O error (the volume then needs reopening).
            RollbackDetected: the counter store moved under us (the volume is open twice).
        """
        self._commit()

    def _commit(self, *, step: int = 1, force: bool = False, strict: bool = False) -> None:
        if self.readonly:
            return
        dirty = [ino for ino in self._dirty if ino in self._files and self._files[ino].dirty]
        if not dirty and not self.index.dirty and not self._deleted and not force:
            self._dirty.clear()
            return
        for ino in dirty:  # what the format cannot hold is refused before anything changes,
            pf = self._files[ino]  # so this commit fails alone and the volume stays usable
            if len(pf.path) > fmt.MAX_PATH_SIZE:
                raise VolumeError(
                    f"{pf.what}: logical path is {len(pf.path)} bytes, the maximum is "
                    f"{fmt.MAX_PATH_SIZE}; rename it and commit again"
                )
        self._cache.hold()
        try:
            self._commit_locked(dirty, step, strict)
        except BaseException as exc:
            self._broken = exc
            raise
        finally:
            self._cache.release()

    def _commit_locked(self, dirty: list[int], step: int, strict: bool) -> None:
        writes: list[tuple[ProtectedFile, int, bytes]] = []
        sealed: list[tuple[ProtectedFile, fmt.MetaNode]] = []
        for ino in sorted(dirty):
            pf = self._files[ino]
            entries, meta = pf.flush_commit()
            writes += [(pf, slot, node) for slot, node in entries]
            sealed.append((pf, meta))
            node = self.index.inodes.get(ino)
            if node is not None:
                node.size = pf.size
                node.meta_tag = meta.tag
                self.index.touch(node)
            if len(sealed) > _FD_RELEASE_AFTER:
                pf.release_fd()
        index_tag = self._header.slot.index_meta_tag
        if self.index.dirty:
            for ino in sorted(self.index.dirty):
                self._index_pf.write(ino * fmt.INDEX_RECORD_SIZE, self.index.record_bytes(ino))
            entries, meta = self._index_pf.flush_commit()
            writes += [(self._index_pf, slot, node) for slot, node in entries]
            sealed.append((self._index_pf, meta))
            index_tag = meta.tag
        # Step 1: fresh in-place writes and new host files must be durable first.
        unsynced = [pf for pf, _ in sealed if pf.unsynced]
        created = any(pf.created_host for pf, _ in sealed)
        if len(unsynced) > SYNCFS_AFTER:
            syncfs(self._index_pf.ensure_host().fd)
        else:
            for pf in unsynced:
                pf.ensure_host().sync()
            if created:
                self._vdir.sync_files_dir()
        new_counter = self._header.counter + step
        self._header = self._log.commit(
            self._header,
            counter=new_counter,
            index_tag=index_tag,
            writes=[(pf.ensure_host(), pf.file_id, slot, node) for pf, slot, node in writes],
        )
        shrank = False
        for pf, meta in sealed:
            fresh_from = pf.fresh_from
            pf.committed(meta)
            shrank = shrank or pf.fresh_from < fresh_from
            pf.trim_host()
            if len(sealed) > _FD_RELEASE_AFTER:
                pf.release_fd()
        if shrank:
            # Slots past the new end are fresh again and will be written in place without the
            # journal; a replay of an older record must never write over them, so checkpoint.
            self._header = self._log.checkpoint(self._header)
        self.index.dirty.clear()
        committed, self._dirty = self._dirty, set()
        for ino in committed:
            self._maybe_idle(ino)
        for file_id in self._deleted:
            self._vdir.remove_host_file(file_id)
        self._deleted.clear()
        self._trim_files()
        self._record_counter(strict=strict)

    def _record_counter(self, *, strict: bool) -> None:
        """Record the header's counter in the freshness store, unless the rollback window lets
        it wait: then the store is caught up by the first commit, or the first
        :meth:`catch_up_counter`, at least half a window after the first commit it lacks."""
        if not strict and self.rollback_window > 0:
            now = _now()
            if self._lag_since is None:
                self._lag_since = now
            if now - self._lag_since < self.rollback_window / 2:
                return
        if self._header.counter > self._fresh_value:
            self._freshness.advance(self.volume_id, self._fresh_value, self._header.counter)
            self._fresh_value = self._header.counter
        self._lag_since = None

    @property
    def counter_lag(self) -> int:
        """Commits the freshness store does not hold yet (0 without a rollback window)."""
        return self._header.counter - self._fresh_value if self._lag_since is not None else 0

    @_guarded
    def catch_up_counter(self) -> None:
        """With a rollback window: record the counter once half the window has passed since the
        first commit the store lacks. Call it at least every quarter window.

        Raises:
            VolumeError: the store could not be reached (the volume is then broken: the window
                can no longer be kept). RollbackDetected: the store moved under us.
        """
        if self._lag_since is None or self.readonly:
            return
        try:
            self._record_counter(strict=False)
        except BaseException as exc:
            self._broken = exc
            raise

    def _after_change(self) -> None:
        """Bound memory: write back fresh dirty nodes, then commit if still over the limit."""
        if self._cache.dirty_nodes > self._dirty_limit:
            many = len(self._dirty) > _FD_RELEASE_AFTER
            for ino in list(self._dirty):
                pf = self._files.get(ino)
                if pf is not None and pf.writeback() and many:
                    pf.release_fd()
            if self._cache.dirty_nodes > self._dirty_limit // 2:
                self._commit()
        if len(self._dirty) > MAX_DIRTY_FILES:
            self._commit()
        self._trim_files()

    def _touch_fd(self, ino: int) -> None:
        self._fds[ino] = None
        self._fds.move_to_end(ino)
        while len(self._fds) > MAX_OPEN_FDS:
            old, _ = self._fds.popitem(last=False)
            pf = self._files.get(old)
            if pf is not None:
                pf.release_fd()

    def _mark_dirty(self, ino: int) -> None:
        self._dirty.add(ino)
        self._idle.pop(ino, None)

    def _maybe_idle(self, ino: int) -> None:
        pf = self._files.get(ino)
        if pf is not None and not pf.dirty and not self._pins.get(ino):
            self._idle[ino] = None
            self._idle.move_to_end(ino)

    def _trim_files(self) -> None:
        while len(self._idle) > MAX_IDLE_FILES:
            ino, _ = self._idle.popitem(last=False)
            pf = self._files.pop(ino, None)
            if pf is not None:
                pf.close()

    def close(self) -> None:
        """Commit pending changes (unless read-only or broken) and release the volume.

        Raises:
            VolumeError: the final commit failed (the volume is released anyway).
        """
        with self._lock:
            if self._closed:
                return
            try:
                if self._broken is None and not self.readonly:
                    self._commit(strict=True)
                    try:
                        self._record_counter(strict=True)  # a window's lag ends with the volume
                    except BaseException as exc:
                        self._broken = exc  # not recorded: say so, as for a failed commit
                        self.unrecorded = True
                        raise
                    self._header = self._log.checkpoint(self._header)
            finally:
                for pf in self._files.values():
                    pf.close()
                self._files.clear()
                self._index_pf.close()
                self._closed = True
                self._vdir.close()

    # --- inode API (the FUSE adapter uses these) -----------------------------------------
    def _pf(self, node: Inode) -> ProtectedFile:
        pf = self._files.get(node.ino)
        if pf is not None:
            if node.ino in self._idle:
                self._idle.move_to_end(node.ino)
            self._touch_fd(node.ino)
            return pf
        if not node.has_data:
            raise _oserror(errno.EISDIR, node.name.decode("utf-8", "replace"))
        pf = ProtectedFile.load(
            keys=self._keys,
            cache=self._cache,
            file_id=node.file_id,
            file_kind=fmt.FILE_KIND_DATA,
            path=self.index.path_of(node.ino),
            host_path=self._vdir.host_path(node.file_id),
            expected_tag=node.meta_tag,
            readonly=self.readonly,
            overlay=self._overlay.get(node.file_id),
        )
        if pf.size != node.size:
            pf.close()
            raise VolumeCorrupt(f"{pf.what}: index records size {node.size}, file has {pf.size}")
        self._files[node.ino] = pf
        self._touch_fd(node.ino)
        self._maybe_idle(node.ino)
        self._trim_files()
        return pf

    def _stat(self, node: Inode) -> VolumeStat:
        pf = self._files.get(node.ino)
        size = pf.size if pf is not None else node.size
        nlink = 1
        if node.kind == fmt.KIND_DIR:
            size = len(self.index.children.get(node.ino, ()))
            nlink = 2 + self.index.subdirs.get(node.ino, 0)
        elif node.parent == fmt.ORPHAN_PARENT:
            nlink = 0
        return VolumeStat(
            ino=node.ino,
            kind=_KIND_NAMES[node.kind],
            mode=_KIND_BITS[node.kind] | node.mode,
            size=size,
            uid=node.uid,
            gid=node.gid,
            nlink=nlink,
            mtime_ns=node.mtime_ns,
            ctime_ns=node.ctime_ns,
            generation=node.generation,
        )

    @_guarded
    def getattr(self, ino: int) -> VolumeStat:
        """Raises: OSError(ENOENT) for an unknown inode."""
        return self._stat(self.index.get(ino))

    @_guarded
    def lookup(self, parent: int, name: bytes) -> VolumeStat:
        """Raises: OSError(ENOENT / ENOTDIR)."""
        return self._stat(self.index.lookup(parent, name))

    @_guarded
    def readdir(self, ino: int) -> list[tuple[bytes, VolumeStat]]:
        """Entries of directory ``ino``, sorted by name. Raises: OSError(ENOTDIR)."""
        entries = self.index.children.get(ino)
        if entries is None:
            raise _oserror(errno.ENOTDIR)
        return [(name, self._stat(self.index.inodes[c])) for name, c in sorted(entries.items())]

    @_guarded
    def mknod(
        self, parent: int, name: bytes, *, kind: str, mode: int, uid: int, gid: int
    ) -> VolumeStat:
        """Create an empty file (``kind="file"``) or directory (``kind="dir"``).

        Raises:
            OSError: EEXIST, ENOTDIR, EINVAL, ENAMETOOLONG, EROFS.
        """
        self._check_writable()
        check_name(name)
        return self._stat(self._new(parent, name, kind, mode, uid, gid))

    def _new(
        self, parent: int, name: bytes, kind: str, mode: int, uid: int, gid: int,
        content: bytes = b"",
    ) -> Inode:  # fmt: skip
        codes = {"file": fmt.KIND_FILE, "dir": fmt.KIND_DIR, "symlink": fmt.KIND_SYMLINK}
        if kind not in codes:
            raise ValueError(f"kind is {kind!r}, expected file, dir or symlink")
        if parent not in self.index.children:
            raise _oserror(errno.ENOTDIR, name.decode("utf-8", "replace"))
        self.index.check_room(parent, name)  # before anything changes
        now = time.time_ns()
        node = Inode(
            ino=0,
            kind=codes[kind],
            mode=mode & 0o7777,
            parent=parent,
            uid=uid,
            gid=gid,
            generation=0,
            size=0,
            mtime_ns=now,
            ctime_ns=now,
            file_id=os.urandom(fmt.ID_SIZE) if kind != "dir" else bytes(fmt.ID_SIZE),
            meta_tag=bytes(fmt.TAG_SIZE),
            name=name,
        )
        self.index.add(node)
        self._touch_dir(parent, now)
        if node.has_data:
            self._files[node.ino] = ProtectedFile(
                keys=self._keys,
                cache=self._cache,
                file_id=node.file_id,
                file_kind=fmt.FILE_KIND_DATA,
                path=self.index.path_of(node.ino),
                host_path=self._vdir.host_path(node.file_id),
                host=None,
            )
            if content:  # before any commit can run: a symlink is never seen without its target
                self._files[node.ino].write(0, content)
            self._mark_dirty(node.ino)
        self._after_change()
        return node

    def _touch_dir(self, ino: int, now: int) -> None:
        node = self.index.inodes[ino]
        node.mtime_ns = node.ctime_ns = now
        self.index.touch(node)

    @_guarded
    def symlink(self, parent: int, name: bytes, target: bytes, *, uid: int, gid: int) -> VolumeStat:
        """Create a symbolic link. Raises: OSError as for :meth:`mknod`."""
        self._check_writable()
        check_name(name)
        if not target or len(target) > 4095:
            raise _oserror(errno.EINVAL, name)
        return self._stat(self._new(parent, name, "symlink", 0o777, uid, gid, content=target))

    @_guarded
    def readlink(self, ino: int) -> bytes:
        """Raises: OSError(EINVAL) when ``ino`` is not a symlink; VolumeCorrupt."""
        node = self.index.get(ino)
        if node.kind != fmt.KIND_SYMLINK:
            raise _oserror(errno.EINVAL)
        pf = self._pf(node)
        return pf.read(0, pf.size)

    @_guarded
    def unlink_at(self, parent: int, name: bytes) -> None:
        """Remove a file or symlink; an open file lives on until its last ``unpin``.

        Raises:
            OSError: ENOENT, EISDIR, EROFS.
        """
        self._check_writable()
        node = self.index.lookup(parent, name)
        if node.kind == fmt.KIND_DIR:
            raise _oserror(errno.EISDIR, name.decode("utf-8", "replace"))
        self._remove(node)
        self._touch_dir(parent, time.time_ns())

    def _remove(self, node: Inode) -> None:
        if node.kind == fmt.KIND_DIR:
            self.index.unlink(node, keep=False)
            return
        if self._pins.get(node.ino):
            self.index.unlink(node, keep=True)
            return
        self.index.unlink(node, keep=False)
        pf = self._files.pop(node.ino, None)
        if pf is not None:
            pf.close()
        self._idle.pop(node.ino, None)
        self._dirty.discard(node.ino)
        self._deleted.add(node.file_id)

    @_guarded
    def rmdir_at(self, parent: int, name: bytes) -> None:
        """Remove an empty directory. Raises: OSError ENOENT, ENOTDIR, ENOTEMPTY, EROFS."""
        self._check_writable()
        node = self.index.lookup(parent, name)
        if node.kind != fmt.KIND_DIR:
            raise _oserror(errno.ENOTDIR, name.decode("utf-8", "replace"))
        if self.index.children[node.ino]:
            raise _oserror(errno.ENOTEMPTY, name.decode("utf-8", "replace"))
        self._remove(node)
        self._touch_dir(parent, time.time_ns())

    @_guarded
    def rename_at(
        self, parent: int, name: bytes, new_parent: int, new_name: bytes, *, replace: bool = True
    ) -> None:
        """Rename, replacing an existing target as POSIX ``rename`` does (unless ``replace`` is
        false). Moved files are re-bound to their new logical path in the same commit.

        Raises:
            OSError: ENOENT, EEXIST, EISDIR, ENOTDIR, ENOTEMPTY, EINVAL, EROFS.
        """
        self._check_writable()
        check_name(new_name)
        src = self.index.lookup(parent, name)
        if new_parent not in self.index.children:
            raise _oserror(errno.ENOTDIR, new_name.decode("utf-8", "replace"))
        if src.kind == fmt.KIND_DIR and self.index.is_ancestor(src.ino, new_parent):
            raise _oserror(errno.EINVAL, new_name.decode("utf-8", "replace"))
        dst_ino = self.index.children[new_parent].get(new_name)
        if dst_ino == src.ino:
            return
        if dst_ino is not None:
            dst = self.index.inodes[dst_ino]
            if not replace:
                raise _oserror(errno.EEXIST, new_name.decode("utf-8", "replace"))
            if src.kind == fmt.KIND_DIR:
                if dst.kind != fmt.KIND_DIR:
                    raise _oserror(errno.ENOTDIR, new_name.decode("utf-8", "replace"))
                if self.index.children[dst.ino]:
                    raise _oserror(errno.ENOTEMPTY, new_name.decode("utf-8", "replace"))
            elif dst.kind == fmt.KIND_DIR:
                raise _oserror(errno.EISDIR, new_name.decode("utf-8", "replace"))
        moved = [src.ino] + (self.index.descendants(src.ino) if src.kind == fmt.KIND_DIR else [])
        old_len = len(self.index.path_of(src.ino))
        deepest = max(len(self.index.path_of(i)) for i in moved) - old_len
        self.index.check_room(new_parent, new_name, below=deepest)  # before anything changes
        rebind = [self.index.inodes[i] for i in moved if self.index.inodes[i].has_data]
        files = [self._pf(n) for n in rebind]  # load (and verify) under the old paths
        if dst_ino is not None:
            self._remove(self.index.inodes[dst_ino])
        self.index.move(src, new_parent, new_name)
        now = time.time_ns()
        src.ctime_ns = now
        self._touch_dir(parent, now)
        self._touch_dir(new_parent, now)
        for node, pf in zip(rebind, files, strict=True):
            pf.path = self.index.path_of(node.ino)
            pf.meta_dirty = True
            self._mark_dirty(node.ino)
        self._after_change()

    @_guarded
    def setattr(
        self,
        ino: int,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        size: int | None = None,
        mtime_ns: int | None = None,
    ) -> VolumeStat:
        """Change permissions, owner, size (truncate) or modification time.

        Raises:
            OSError: ENOENT, EISDIR (size of a directory), EROFS.
        """
        self._check_writable()
        node = self.index.get(ino)
        now = time.time_ns()
        if size is not None:
            if node.kind != fmt.KIND_FILE:
                raise _oserror(errno.EISDIR if node.kind == fmt.KIND_DIR else errno.EINVAL)
            pf = self._pf(node)
            if size != pf.size:
                pf.truncate(size)
                self._mark_dirty(ino)
            node.mtime_ns = now
        if mode is not None:
            node.mode = mode & 0o7777
        if uid is not None:
            node.uid = uid
        if gid is not None:
            node.gid = gid
        if mtime_ns is not None:
            node.mtime_ns = mtime_ns
        node.ctime_ns = now
        self.index.touch(node)
        self._after_change()
        return self._stat(node)

    @_guarded
    def pread(self, ino: int, offset: int, length: int) -> bytes:
        """Read from a regular file.

        Raises:
            OSError: ENOENT, EISDIR. VolumeCorrupt: a node fails authentication.
        """
        node = self.index.get(ino)
        if node.kind != fmt.KIND_FILE:
            raise _oserror(errno.EISDIR if node.kind == fmt.KIND_DIR else errno.EINVAL)
        return self._pf(node).read(offset, length)

    @_guarded
    def pread_buffer(self, ino: int, offset: int, length: int) -> bytes | bytearray:
        """:meth:`pread` without the final copy of a large read (for the FUSE adapter)."""
        node = self.index.get(ino)
        if node.kind != fmt.KIND_FILE:
            raise _oserror(errno.EISDIR if node.kind == fmt.KIND_DIR else errno.EINVAL)
        return self._pf(node).read_buffer(offset, length)

    @_guarded
    def pwrite(self, ino: int, offset: int, data: bytes | bytearray | memoryview) -> int:
        """Write to a regular file (extending it as needed).

        Raises:
            OSError: ENOENT, EISDIR, EROFS. VolumeCorrupt: a node that must be read first
            fails authentication.
        """
        self._check_writable()
        node = self.index.get(ino)
        if node.kind != fmt.KIND_FILE:
            raise _oserror(errno.EISDIR if node.kind == fmt.KIND_DIR else errno.EINVAL)
        n = self._pf(node).write(offset, data)
        node.mtime_ns = node.ctime_ns = time.time_ns()
        self._mark_dirty(ino)
        self._after_change()
        return n

    @_guarded
    def file_size(self, ino: int) -> int:
        return self._stat(self.index.get(ino)).size

    @_guarded
    def pin(self, ino: int) -> None:
        """Hold ``ino`` open: if unlinked meanwhile, its data lives on until :meth:`unpin`."""
        self.index.get(ino)
        self._pins[ino] = self._pins.get(ino, 0) + 1
        self._idle.pop(ino, None)

    @_guarded
    def unpin(self, ino: int) -> None:
        count = self._pins.get(ino, 0) - 1
        if count > 0:
            self._pins[ino] = count
            return
        self._pins.pop(ino, None)
        self._maybe_idle(ino)
        node = self.index.inodes.get(ino)
        if node is not None and node.parent == fmt.ORPHAN_PARENT and not self.readonly:
            self.index.release_orphan(node)
            pf = self._files.pop(ino, None)
            if pf is not None:
                pf.close()
            self._idle.pop(ino, None)
            self._dirty.discard(ino)
            self._deleted.add(node.file_id)

    # --- administration -------------------------------------------------------------------
    @_guarded
    def loaded_file(self, ino: int) -> ProtectedFile:
        """The protected file of ``ino``, loaded and checked (for fsck and export).

        Raises:
            VolumeCorrupt: its metadata does not match the index.
        """
        return self._pf(self.index.get(ino))

    @_guarded
    def forget_file(self, ino: int) -> None:
        """Drop a clean, unpinned file from memory."""
        pf = self._files.get(ino)
        if pf is not None and not pf.dirty and not self._pins.get(ino):
            pf.close()
            del self._files[ino]
            self._idle.pop(ino, None)

    @_guarded
    def live_file_ids(self) -> set[bytes]:
        """File ids the index references (the index's own included)."""
        live = {n.file_id for n in self.index.inodes.values() if n.has_data}
        live.add(self._header.slot.index_file_id)
        return live

    @_guarded
    def info(self) -> VolumeInfo:
        kinds = [n.kind for n in self.index.inodes.values() if n.parent != fmt.ORPHAN_PARENT]
        logical = sum(
            (self._files[i].size if i in self._files else n.size)
            for i, n in self.index.inodes.items()
            if n.has_data
        )
        storage = self._vdir.storage_bytes()
        return VolumeInfo(
            path=str(self._vdir.root),
            volume_id=self.volume_id,
            format_version=self._header.slot.format_version,
            counter=self._header.counter,
            freshness_counter=self._fresh_value,
            files=kinds.count(fmt.KIND_FILE),
            directories=kinds.count(fmt.KIND_DIR) - 1,
            symlinks=kinds.count(fmt.KIND_SYMLINK),
            logical_bytes=logical,
            storage_bytes=storage,
            readonly=self.readonly,
        )

    @_guarded
    def rekey(self, new_key: bytes) -> None:
        """Wrap the volume key under a new key-encryption key; data is not re-encrypted.

        Both header slots are rewritten, so the old key no longer opens this copy of the volume.

        Raises:
            ConfigError: ``new_key`` is not 32 bytes. OSError(EROFS). VolumeError: I/O.
        """
        self._check_writable()
        self._commit()
        fresh = cm.new_header_slot(
            new_key,
            volume_id=self._header.slot.volume_id,
            volume_key=self._volume_key,
            index_file_id=self._header.slot.index_file_id,
            counter=self._header.counter + 1,
        )
        fresh = dataclasses.replace(fresh, index_meta_tag=self._header.slot.index_meta_tag)
        try:
            self._header = self._log.checkpoint(self._header)
            header = cm.write_header(self._vdir, self._header, fresh)
            self._header = cm.write_header(self._vdir, header, fresh)
            self._freshness.advance(self.volume_id, self._fresh_value, fresh.counter)
            self._fresh_value = fresh.counter
        except BaseException as exc:
            self._broken = exc
            raise
