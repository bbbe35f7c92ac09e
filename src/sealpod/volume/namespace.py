"""The volume's namespace: the inode index held in memory, checked when loaded.

The index is itself a protected file of 512-byte records (``format.IndexRecord``); record number
= inode number, record 0 is the root directory. Directories exist only here; regular files and
symlinks also have a protected file named by their random file id, whose metadata tag the record
holds, so the index authenticates every file's current version (a file restored from an older
copy, or swapped with another, does not match).

Namespace errors (no such file, exists, not empty, ...) are ordinary ``OSError`` subclasses with
their errno, as a file system reports them; integrity failures are ``VolumeCorrupt``.
"""

from __future__ import annotations

import errno
import heapq
import os
from dataclasses import dataclass

from sealpod.errors import VolumeCorrupt
from sealpod.volume import format as fmt


def _oserror(code: int, path: bytes | str) -> OSError:
    name = path.decode("utf-8", "replace") if isinstance(path, bytes) else path
    return OSError(code, os.strerror(code), name)


def check_name(name: bytes) -> None:
    """Raises: OSError(EINVAL / ENAMETOOLONG) for names a directory cannot hold."""
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
        raise _oserror(errno.EINVAL, name)
    if len(name) > fmt.MAX_NAME_SIZE:
        raise _oserror(errno.ENAMETOOLONG, name)


@dataclass(slots=True, kw_only=True)
class Inode:
    """A mutable in-memory copy of one index record."""

    ino: int
    kind: int
    mode: int
    parent: int
    uid: int
    gid: int
    generation: int
    size: int
    mtime_ns: int
    ctime_ns: int
    file_id: bytes
    meta_tag: bytes
    name: bytes

    @classmethod
    def from_record(cls, ino: int, rec: fmt.IndexRecord) -> Inode:
        return cls(
            ino=ino,
            kind=rec.kind,
            mode=rec.mode,
            parent=rec.parent,
            uid=rec.uid,
            gid=rec.gid,
            generation=rec.generation,
            size=rec.size,
            mtime_ns=rec.mtime_ns,
            ctime_ns=rec.ctime_ns,
            file_id=rec.file_id,
            meta_tag=rec.meta_tag,
            name=rec.name,
        )

    def to_record(self) -> fmt.IndexRecord:
        return fmt.IndexRecord(
            kind=self.kind,
            mode=self.mode,
            parent=self.parent,
            uid=self.uid,
            gid=self.gid,
            generation=self.generation,
            size=self.size,
            mtime_ns=self.mtime_ns,
            ctime_ns=self.ctime_ns,
            file_id=self.file_id,
            meta_tag=self.meta_tag,
            name=self.name,
        )

    @property
    def has_data(self) -> bool:
        return self.kind in (fmt.KIND_FILE, fmt.KIND_SYMLINK)


class Index:
    """Inodes by number, directory entries by parent, and the set of changed records."""

    def __init__(self, inodes: dict[int, Inode], count: int) -> None:
        self.inodes = inodes
        self.count = count  # records in the index file (free ones included)
        self.children: dict[int, dict[bytes, int]] = {
            ino: {} for ino, node in inodes.items() if node.kind == fmt.KIND_DIR
        }
        self.subdirs: dict[int, int] = {}  # directory -> number of child directories (nlink)
        self.dirty: set[int] = set()
        self._free = sorted(set(range(1, count)) - set(inodes))  # a min-heap of free records
        # Highest generation handed out per record number: a reused record gets a new one, so
        # the FUSE node id (record, generation) of a deleted file is never reused.
        self._generations: dict[int, int] = {ino: n.generation for ino, n in inodes.items()}

    # --- loading --------------------------------------------------------------------------
    @classmethod
    def empty(cls, *, uid: int, gid: int, now_ns: int) -> Index:
        root = Inode(
            ino=fmt.ROOT_INO,
            kind=fmt.KIND_DIR,
            mode=0o755,
            parent=fmt.ROOT_INO,
            uid=uid,
            gid=gid,
            generation=0,
            size=0,
            mtime_ns=now_ns,
            ctime_ns=now_ns,
            file_id=bytes(fmt.ID_SIZE),
            meta_tag=bytes(fmt.TAG_SIZE),
            name=b"",
        )
        index = cls({0: root}, 1)
        index.dirty.add(0)
        return index

    @classmethod
    def from_bytes(cls, data: bytes) -> Index:
        """Parse and check the whole index.

        Raises:
            VolumeCorrupt: a record does not parse, or the tree is inconsistent (missing root,
                dangling parent, duplicate name or file id, a cycle).
        """
        if len(data) % fmt.INDEX_RECORD_SIZE or not data:
            raise VolumeCorrupt(f"index is {len(data)} bytes, not a whole number of records")
        count = len(data) // fmt.INDEX_RECORD_SIZE
        if count > fmt.MAX_RECORDS:
            raise VolumeCorrupt(f"index has {count} records, expected at most {fmt.MAX_RECORDS}")
        view = memoryview(data)
        inodes: dict[int, Inode] = {}
        for ino in range(count):
            raw = view[ino * fmt.INDEX_RECORD_SIZE : (ino + 1) * fmt.INDEX_RECORD_SIZE]
            if not any(raw):
                continue
            inodes[ino] = Inode.from_record(ino, fmt.IndexRecord.from_bytes(raw))
        root = inodes.get(fmt.ROOT_INO)
        if root is None or root.kind != fmt.KIND_DIR or root.parent != fmt.ROOT_INO or root.name:
            raise VolumeCorrupt("index: record 0 is not the root directory")
        index = cls(inodes, count)
        file_ids: set[bytes] = set()
        for ino, node in inodes.items():
            if ino == fmt.ROOT_INO:
                continue
            if node.has_data:
                if node.file_id in file_ids or not any(node.file_id):
                    raise VolumeCorrupt(f"index: record {ino} has a duplicate or zero file id")
                file_ids.add(node.file_id)
            if node.parent == fmt.ORPHAN_PARENT and node.has_data:
                continue
            parent = index.children.get(node.parent)
            if parent is None:
                raise VolumeCorrupt(f"index: record {ino} has parent {node.parent}, not a dir")
            try:
                check_name(node.name)
            except OSError as exc:
                raise VolumeCorrupt(f"index: record {ino} has an invalid name") from exc
            if node.name in parent:
                raise VolumeCorrupt(f"index: record {ino} duplicates a name in its directory")
            parent[node.name] = ino
            if node.kind == fmt.KIND_DIR:
                index.subdirs[node.parent] = index.subdirs.get(node.parent, 0) + 1
        for ino in inodes:  # every directory chain must reach the root
            seen = 0
            cur = ino
            while cur != fmt.ROOT_INO:
                node = inodes[cur]
                if node.parent == fmt.ORPHAN_PARENT:
                    break
                cur = node.parent
                seen += 1
                if seen > len(inodes):
                    raise VolumeCorrupt(f"index: record {ino} is part of a directory cycle")
        return index

    def record_bytes(self, ino: int) -> bytes:
        node = self.inodes.get(ino)
        return node.to_record().to_bytes() if node else bytes(fmt.INDEX_RECORD_SIZE)

    # --- queries --------------------------------------------------------------------------
    def get(self, ino: int) -> Inode:
        node = self.inodes.get(ino)
        if node is None:
            raise _oserror(errno.ENOENT, f"inode {ino}")
        return node

    def lookup(self, parent: int, name: bytes) -> Inode:
        entries = self.children.get(parent)
        if entries is None:
            raise _oserror(errno.ENOTDIR, name)
        ino = entries.get(name)
        if ino is None:
            raise _oserror(errno.ENOENT, name)
        return self.inodes[ino]

    def check_room(self, parent: int, name: bytes, *, below: int = 0) -> None:
        """Refuse a new entry whose logical path (plus ``below`` more bytes of the deepest path
        under it, for a moved directory) would exceed the format's limit: the metadata node of
        a file holds at most ``MAX_PATH_SIZE`` bytes, so what cannot be committed is never
        accepted.

        Raises:
            OSError: ENAMETOOLONG.
        """
        base = len(self.path_of(parent))
        size = base + (1 if base else 0) + len(name) + below
        if size > fmt.MAX_PATH_SIZE:
            raise OSError(
                errno.ENAMETOOLONG,
                f"logical path would be {size} bytes, the maximum is {fmt.MAX_PATH_SIZE}",
                name.decode("utf-8", "replace"),
            )

    def path_of(self, ino: int) -> bytes:
        """The logical path (no leading slash) of a linked inode; b"" for the root."""
        parts: list[bytes] = []
        cur = ino
        while cur != fmt.ROOT_INO:
            node = self.inodes[cur]
            if node.parent == fmt.ORPHAN_PARENT:
                return b"\0orphan/" + str(ino).encode()
            parts.append(node.name)
            cur = node.parent
        return b"/".join(reversed(parts))

    def descendants(self, ino: int) -> list[int]:
        """Every inode below directory ``ino`` (not ``ino`` itself)."""
        out: list[int] = []
        stack = [ino]
        while stack:
            for child in self.children.get(stack.pop(), {}).values():
                out.append(child)
                if child in self.children:
                    stack.append(child)
        return out

    def is_ancestor(self, ancestor: int, ino: int) -> bool:
        cur = ino
        while cur != fmt.ROOT_INO:
            if cur == ancestor:
                return True
            cur = self.inodes[cur].parent
            if cur == fmt.ORPHAN_PARENT:
                return False
        return ancestor == fmt.ROOT_INO

    def orphans(self) -> list[Inode]:
        return [n for n in self.inodes.values() if n.parent == fmt.ORPHAN_PARENT]

    # --- changes --------------------------------------------------------------------------
    def add(self, node: Inode) -> Inode:
        """Link a new inode (``node.ino`` is assigned here) under its parent."""
        entries = self.children.get(node.parent)
        if entries is None:
            raise _oserror(errno.ENOTDIR, node.name)
        if node.name in entries:
            raise _oserror(errno.EEXIST, node.name)
        if self._free:
            ino = heapq.heappop(self._free)
        else:
            ino = self.count
            if ino >= fmt.MAX_RECORDS:  # a full file system: ENOSPC, nothing changed
                raise OSError(
                    errno.ENOSPC, f"the volume holds the maximum of {fmt.MAX_RECORDS} inodes"
                )
            self.count += 1
        node.ino = ino
        node.generation = (self._generations.get(ino, 0) + 1) & 0xFFFFFFFF or 1
        self._generations[ino] = node.generation
        self.inodes[ino] = node
        entries[node.name] = ino
        if node.kind == fmt.KIND_DIR:
            self.children[ino] = {}
            self.subdirs[node.parent] = self.subdirs.get(node.parent, 0) + 1
        self.dirty.add(ino)
        return node

    def unlink(self, node: Inode, *, keep: bool) -> None:
        """Remove ``node``'s name; with ``keep`` the record stays as an orphan (still open)."""
        if node.parent != fmt.ORPHAN_PARENT:
            del self.children[node.parent][node.name]
            if node.kind == fmt.KIND_DIR:
                self.subdirs[node.parent] -= 1
                self.subdirs.pop(node.ino, None)
        if keep:
            node.parent = fmt.ORPHAN_PARENT
            node.name = b""
        else:
            del self.inodes[node.ino]
            self.children.pop(node.ino, None)
            heapq.heappush(self._free, node.ino)
        self.dirty.add(node.ino)

    def release_orphan(self, node: Inode) -> None:
        """Free an orphan's record once nothing holds it open."""
        del self.inodes[node.ino]
        heapq.heappush(self._free, node.ino)
        self.dirty.add(node.ino)

    def move(self, node: Inode, parent: int, name: bytes) -> None:
        del self.children[node.parent][node.name]
        if node.kind == fmt.KIND_DIR:
            self.subdirs[node.parent] -= 1
            self.subdirs[parent] = self.subdirs.get(parent, 0) + 1
        node.parent = parent
        node.name = name
        self.children[parent][name] = node.ino
        self.dirty.add(node.ino)

    def touch(self, node: Inode) -> None:
        self.dirty.add(node.ino)
