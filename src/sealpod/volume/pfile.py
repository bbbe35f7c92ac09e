"""One protected file: the Merkle tree of encrypted nodes, a node cache, and flushing.

A :class:`ProtectedFile` keeps decrypted nodes in memory. Clean nodes live in the volume-wide
:class:`NodeCache` (LRU, bounded); dirty nodes stay until they are flushed. Two kinds of flush:

* :meth:`ProtectedFile.writeback` encrypts dirty data nodes whose slots are *fresh* (beyond what
  the last commit uses) and writes them in place: nothing committed refers to those slots, so a
  crash cannot hurt, and streaming writes need no journal.
* :meth:`ProtectedFile.flush_commit` encrypts everything dirty, bottom-up (data, MHT nodes from
  the highest index down, then the metadata node). Fresh slots are written in place; slots the
  committed tree still uses are returned as journal entries for :mod:`sealpod.volume.commit`.

Invariants: an all-zero parent entry is a hole (reads as zeros); every entry beyond the file's
current size is zero; plaintext beyond the size inside the last node is zero.
"""

from __future__ import annotations

import errno
import heapq
from collections.abc import Callable

from sealpod.errors import VolumeCorrupt, VolumeError
from sealpod.volume import format as fmt
from sealpod.volume.cache import NodeCache
from sealpod.volume.crypt import BatchCipher, TreeDecryptor, VolumeKeys
from sealpod.volume.store import HostFile, HostName

NODE = fmt.NODE_SIZE
D = fmt.DATA_PER_MHT
ENTRY = fmt.ENTRY_SIZE
SEALED = NODE + fmt.TAG_SIZE
_ZERO_NODE = bytes(NODE)
DIRECT_MIN_NODES = 8  # reads/writes of at least this many whole nodes bypass the cache


class ProtectedFile:
    """The tree of one protected file. Not thread-safe: the volume serialises access."""

    def __init__(
        self,
        *,
        keys: VolumeKeys,
        cache: NodeCache,
        file_id: bytes,
        file_kind: int,
        path: bytes,
        host_path: HostName,
        host: HostFile | None,
        size: int = 0,
        generation: int = 0,
        root: bytes = fmt.ZERO_ENTRY,
        inline: bytes | None = b"",
        meta_tag: bytes | None = None,
        readonly: bool = False,
        overlay: dict[int, bytes] | None = None,
    ) -> None:
        self.keys = keys
        self.cache = cache
        self.file_id = file_id
        self.file_kind = file_kind
        self.path = path
        self.host_path = host_path
        self.host = host
        self.readonly = readonly
        self.overlay = overlay
        self.size = size
        self.generation = generation
        self.root = root
        self._inline = inline  # committed inline content while the tree is empty
        self.meta_tag = meta_tag  # tag of the committed metadata node (None: never committed)
        self.fresh_from = fmt.slots_for(size) if meta_tag is not None else 0
        self.committed_size = size
        self.meta_dirty = meta_tag is None
        self.unsynced = False
        self.created_host = False
        self.data: dict[int, bytearray] = {}
        self.dirty_data: set[int] = set()
        self.mht: dict[int, bytearray] = {}
        self.dirty_mht: set[int] = set()
        self._decryptor = TreeDecryptor(keys.volume_id, file_id)
        self._scratch = memoryview(b"")  # reused ciphertext buffer for one run of nodes

    def __repr__(self) -> str:
        return f"ProtectedFile(id={self.file_id.hex()}, path={self.path!r}, size={self.size})"

    @property
    def what(self) -> str:
        name = self.path.decode("utf-8", "replace") if self.path else "<index>"
        return f"file {name!r}"

    def _describe(self) -> str:
        return self.what

    @property
    def dirty(self) -> bool:
        return self.meta_dirty or bool(self.dirty_data) or bool(self.dirty_mht)

    # --- opening ------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        *,
        keys: VolumeKeys,
        cache: NodeCache,
        file_id: bytes,
        file_kind: int,
        path: bytes,
        host_path: HostName,
        expected_tag: bytes,
        readonly: bool,
        overlay: dict[int, bytes] | None = None,
    ) -> ProtectedFile:
        """Open a committed protected file and check it against what its parent expects.

        Raises:
            VolumeCorrupt: missing, truncated, replaced, rolled back, moved or tampered with.
        """
        name = path.decode("utf-8", "replace") if path else "<index>"
        host = HostFile.open(host_path, readonly=readonly)
        try:
            if overlay:
                host.overlay = overlay
            raw = host.read_slots(0, 1)
            if len(raw) != NODE:
                raise VolumeCorrupt(f"file {name!r}: metadata node is truncated on the host")
            node = fmt.MetaNode.from_bytes(raw)
            if node.file_id != file_id or node.file_kind != file_kind:
                raise VolumeCorrupt(
                    f"file {name!r}: metadata node belongs to another file (swapped on the host)"
                )
            if node.tag != expected_tag:
                raise VolumeCorrupt(
                    f"file {name!r}: metadata node is not the committed version (rolled back, "
                    "replaced or tampered with)"
                )
            body = keys.open_meta(node, f"file {name!r}")
            if body.path != path:
                raise VolumeCorrupt(
                    f"file {name!r}: metadata binds path {body.path.decode('utf-8', 'replace')!r}"
                    " (moved or swapped on the host)"
                )
            need = fmt.slots_for(body.size)
            if host.length() < need * NODE:
                raise VolumeCorrupt(
                    f"file {name!r}: host file is {host.length()} bytes, expected at least "
                    f"{need * NODE} (truncated)"
                )
        except BaseException:
            host.close()
            raise
        return cls(
            keys=keys,
            cache=cache,
            file_id=file_id,
            file_kind=file_kind,
            path=path,
            host_path=host_path,
            host=host,
            size=body.size,
            generation=body.generation,
            root=body.root_entry,
            inline=body.inline_data if body.inline else None,
            meta_tag=node.tag,
            readonly=readonly,
            overlay=overlay,
        )

    def close(self) -> None:
        for i in self.data:
            self.cache.remove(self, fmt.NODE_KIND_DATA, i)
        for j in self.mht:
            self.cache.remove(self, fmt.NODE_KIND_MHT, j)
        self.cache.dirty_nodes -= len(self.dirty_data) + len(self.dirty_mht)
        self.data.clear()
        self.mht.clear()
        self.dirty_data.clear()
        self.dirty_mht.clear()
        if self.host is not None:
            self.host.close()
            self.host = None

    def drop_clean(self, kind: int, index: int) -> None:
        """Called by the cache on eviction."""
        if kind == fmt.NODE_KIND_DATA:
            if index not in self.dirty_data:
                self.data.pop(index, None)
        elif index not in self.dirty_mht:
            self.mht.pop(index, None)

    # --- node access --------------------------------------------------------------------
    def _host(self) -> HostFile:
        """The host file, reopened on demand (the volume closes idle descriptors)."""
        if self.host is None:
            if self.meta_tag is None and not self.created_host:
                raise VolumeCorrupt(f"{self.what}: node referenced but the file has no host data")
            self.host = HostFile.open(self.host_path, readonly=self.readonly)
            if self.overlay:
                self.host.overlay = self.overlay
        return self.host

    def release_fd(self) -> None:
        """Close the host descriptor; it is reopened when next needed."""
        if self.host is not None:
            self.host.close()
            self.host = None

    def _entry_slot(self, j: int) -> tuple[bytearray | None, int]:
        """Where MHT ``j``'s entry lives: (parent node, offset) or (None, 0) for the root."""
        if j == 0:
            return None, 0
        p, k = fmt.mht_parent(j)
        return self._mht(p), fmt.child_entry_offset(k)

    def _mht(self, j: int) -> bytearray:
        node = self.mht.get(j)
        if node is not None:
            if j not in self.dirty_mht:
                self.cache.touch(self, fmt.NODE_KIND_MHT, j)
            return node
        parent, off = self._entry_slot(j)
        entry = self.root if parent is None else bytes(parent[off : off + ENTRY])
        node = bytearray(NODE)
        if entry != fmt.ZERO_ENTRY:
            sealed = bytearray(NODE + fmt.TAG_SIZE)
            if self._host().read_slots_into(fmt.mht_slot(j), [sealed]) != 1:
                raise VolumeCorrupt(f"{self.what}: MHT node {j} is truncated on the host")
            self._decryptor.decrypt_into(entry, fmt.NODE_KIND_MHT, j, sealed, node, self._describe)
            if any(node[fmt.MHT_ENTRIES_SIZE :]):
                raise VolumeCorrupt(f"{self.what}: MHT node {j} has non-zero reserved bytes")
        self.mht[j] = node
        self.cache.add(self, fmt.NODE_KIND_MHT, j)
        return node

    def _dirty_mht(self, j: int) -> bytearray:
        node = self._mht(j)
        if j not in self.dirty_mht:
            self.dirty_mht.add(j)
            self.cache.remove(self, fmt.NODE_KIND_MHT, j)
            self.cache.dirty_nodes += 1
        return node

    def _load_data(self, first: int, last: int) -> None:
        """Bring data nodes ``[first, last)`` into memory, one host read per contiguous run."""
        i = first
        while i < last:
            if i in self.data:
                i += 1
                continue
            if i == 0 and self._inline is not None:
                node = bytearray(NODE)
                node[: len(self._inline)] = self._inline
                self._add_clean(0, node)
                i += 1
                continue
            j = i // D
            mht = self._mht(j)
            run_end = min(last, (j + 1) * D)
            k = i
            while k < run_end and k not in self.data:
                k += 1
            base = (i % D) * ENTRY
            nodes = [bytearray(NODE) for _ in range(k - i)]
            self._open_run(i, bytes(mht[base : base + (k - i) * ENTRY]), nodes)
            for n, node in enumerate(nodes):
                self._add_clean(i + n, node)
            i = k

    def _open_run(
        self, first: int, entries: bytes, outs: list[bytearray] | list[memoryview]
    ) -> None:
        """Read and decrypt consecutive data nodes (one ``preadv``) into ``outs``."""
        count = len(outs)
        if len(self._scratch) < count * SEALED:
            self._scratch = memoryview(bytearray(D * SEALED))
        buf = self._scratch
        if entries != bytes(len(entries)):  # not all holes
            got = self._host().read_slots_strided(fmt.data_slot(first), count, buf)
            for n in range(got, count):
                if entries[n * ENTRY : (n + 1) * ENTRY] != fmt.ZERO_ENTRY:
                    raise VolumeCorrupt(
                        f"{self.what}: data node {first + n} is truncated on the host"
                    )
        self._decryptor.open_run(fmt.NODE_KIND_DATA, first, entries, buf, outs, self._describe)

    def _add_clean(self, i: int, node: bytearray) -> None:
        self.data[i] = node
        self.cache.add(self, fmt.NODE_KIND_DATA, i)

    def _node_for_write(self, i: int) -> bytearray:
        node = self.data.get(i)
        if node is None:
            if i * NODE >= self.size:
                node = bytearray(NODE)  # beyond the end: zeros by invariant, nothing to read
                self.data[i] = node
            else:
                self._load_data(i, i + 1)
                node = self.data[i]
        self._mark_dirty(i)
        return node

    def _mark_dirty(self, i: int) -> None:
        if i not in self.dirty_data:
            self.dirty_data.add(i)
            self.cache.remove(self, fmt.NODE_KIND_DATA, i)
            self.cache.dirty_nodes += 1

    # --- reading and writing ------------------------------------------------------------
    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (fewer at the end of the file).

        Raises:
            VolumeCorrupt: a node on the path fails authentication.
        """
        data = self.read_buffer(offset, length)
        return data if isinstance(data, bytes) else bytes(data)

    def read_buffer(self, offset: int, length: int) -> bytes | bytearray:
        """Like :meth:`read`, but a large read comes back as the ``bytearray`` it was decrypted
        into (no extra copy; the FUSE adapter hands it straight to the kernel)."""
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be non-negative")
        end = min(self.size, offset + length)
        if offset >= end:
            return b""
        first, last = offset // NODE, fmt.data_nodes_for(end)
        if last - first >= DIRECT_MIN_NODES:
            return self._read_direct(offset, end)
        self.cache.hold()  # the nodes must survive until they are copied out
        try:
            self._load_data(first, last)
            parts = []
            for i in range(first, last):
                node = self.data[i]
                if i not in self.dirty_data:
                    self.cache.touch(self, fmt.NODE_KIND_DATA, i)
                a = offset - i * NODE if i == first else 0
                b = end - i * NODE if i == last - 1 else NODE
                parts.append(memoryview(node)[a:b])
            return b"".join(parts)
        finally:
            self.cache.release()

    def _read_direct(self, offset: int, end: int) -> bytearray:
        """A large read: decrypt whole uncached nodes straight into the result, bypassing the
        cache (a streaming reader would only churn it)."""
        out = bytearray(end - offset)
        view = memoryview(out)
        first, last = offset // NODE, fmt.data_nodes_for(end)
        # Partial first/last nodes go through the cache, like any small read.
        head = -offset % NODE
        if head:
            view[:head] = self.read(offset, min(head, end - offset))
        if end % NODE and (end - end % NODE) >= offset + head:
            view[end - end % NODE - offset :] = self.read(end - end % NODE, end % NODE)
        lo = fmt.data_nodes_for(offset)
        hi = end // NODE
        i = lo
        while i < hi:
            node = self.data.get(i)
            if node is not None:
                view[i * NODE - offset : (i + 1) * NODE - offset] = node
                i += 1
                continue
            if i == 0 and self._inline is not None:
                view[: len(self._inline)] = self._inline
                view[len(self._inline) : NODE] = bytes(NODE - len(self._inline))
                i += 1
                continue
            j = i // D
            stop = min(hi, (j + 1) * D)
            k = i
            while k < stop and k not in self.data:
                k += 1
            mht = self._mht(j)
            base = (i % D) * ENTRY
            start = i * NODE - offset
            outs = [view[start + n * NODE : start + (n + 1) * NODE] for n in range(k - i)]
            self._open_run(i, bytes(mht[base : base + (k - i) * ENTRY]), outs)
            i = k
        del first, last
        return out

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        """Write ``data`` at ``offset``, extending the file (with zeros) as needed.

        Raises:
            OSError: EFBIG when the file would exceed the format's maximum size.
            VolumeCorrupt: a node that must be read first fails authentication.
        """
        view = memoryview(data).cast("B")
        end = offset + len(view)
        if offset < 0:
            raise ValueError("offset must be non-negative")
        if end > fmt.MAX_FILE_SIZE:  # refused before anything changes, as a file system does
            raise OSError(errno.EFBIG, f"size {end} exceeds the maximum {fmt.MAX_FILE_SIZE}")
        lo, hi = fmt.data_nodes_for(offset), end // NODE
        if hi - lo >= DIRECT_MIN_NODES and fmt.data_slot(lo) >= self.fresh_from:
            # Whole nodes into never-committed slots: encrypt straight from the caller's buffer
            # and write them now; no journal is needed and nothing lingers in memory.
            if offset < lo * NODE:
                self.write(offset, view[: lo * NODE - offset])
            for i in range(lo, hi):
                if i in self.data:
                    self._forget(fmt.NODE_KIND_DATA, i)
            base = lo * NODE - offset
            self._encrypt_data(
                list(range(lo, hi)),
                BatchCipher(self.keys.volume_id, self.file_id),
                lambda i: view[base + (i - lo) * NODE : base + (i - lo + 1) * NODE],
            )
            if hi * NODE > self.size:
                self.size = hi * NODE
            if end > hi * NODE:
                self.write(hi * NODE, view[hi * NODE - offset :])
            self.meta_dirty = True
            return len(view)
        pos = offset
        while pos < end:
            i, off = divmod(pos, NODE)
            n = min(NODE - off, end - pos)
            src = view[pos - offset : pos - offset + n]
            if n == NODE and i not in self.data:
                self.data[i] = bytearray(src)
                self._mark_dirty(i)
            else:
                node = self._node_for_write(i)
                node[off : off + n] = src
            pos += n
        if end > self.size:
            self.size = end
        self.meta_dirty = True
        return len(view)

    def truncate(self, size: int) -> None:
        """Shrink or extend to ``size``; extension reads as zeros (holes cost nothing).

        Raises:
            OSError: EINVAL for a negative size, EFBIG beyond the format's maximum.
            VolumeCorrupt: a node that must be rewritten fails authentication.
        """
        if size < 0:
            raise OSError(errno.EINVAL, f"size {size} is negative")
        if size > fmt.MAX_FILE_SIZE:
            raise OSError(errno.EFBIG, f"size {size} exceeds the maximum {fmt.MAX_FILE_SIZE}")
        old = self.size
        self.meta_dirty = True
        if size >= old:
            self.size = size
            return
        n_old, n_new = fmt.data_nodes_for(old), fmt.data_nodes_for(size)
        m_old, m_new = fmt.mht_nodes_for(n_old), fmt.mht_nodes_for(n_new)
        if self._inline is not None:
            self._inline = self._inline[:size]
        # The last kept node: zero its tail so a later extension reads zeros.
        if size % NODE:
            node = self._node_for_write(n_new - 1)
            node[size % NODE :] = bytes(NODE - size % NODE)
        for i in [i for i in self.data if i >= n_new]:
            self._forget(fmt.NODE_KIND_DATA, i)
        # Zero the entries of the dropped data nodes in the last kept MHT node.
        if m_new and n_new % D and n_old > n_new:
            tail = self._dirty_mht(m_new - 1)
            start = (n_new % D) * ENTRY
            stop = (min(n_old, m_new * D) - (m_new - 1) * D) * ENTRY
            tail[start:stop] = bytes(stop - start)
        # Drop MHT nodes beyond the new tree; zero their entries in surviving parents.
        for j in range(max(m_new, 1), m_old):
            p, k = fmt.mht_parent(j)
            if p < m_new:
                off = fmt.child_entry_offset(k)
                parent = self._dirty_mht(p)
                parent[off : off + ENTRY] = fmt.ZERO_ENTRY
        for j in [j for j in self.mht if j >= m_new]:
            self._forget(fmt.NODE_KIND_MHT, j)
        if m_new == 0:
            self.root = fmt.ZERO_ENTRY
        self.size = size

    def _forget(self, kind: int, index: int) -> None:
        nodes, dirty = (
            (self.data, self.dirty_data)
            if kind == fmt.NODE_KIND_DATA
            else (self.mht, self.dirty_mht)
        )
        nodes.pop(index, None)
        if index in dirty:
            dirty.discard(index)
            self.cache.dirty_nodes -= 1
        else:
            self.cache.remove(self, kind, index)

    # --- checking -------------------------------------------------------------------------
    def stored_mht(self) -> list[int]:
        """Indices of the MHT nodes that are stored (not holes), found by walking down from
        the root: a hole's subtree is all holes, so the walk costs what is stored, not the
        logical size (a 1 TiB file with one byte written has a handful of MHT nodes).

        Raises:
            VolumeCorrupt: a stored MHT node fails authentication.
        """
        return [j for j, _ in self._walk_mht(None)]

    def _walk_mht(self, problems: list[tuple[str, int, str]] | None) -> list[tuple[int, bytearray]]:
        """(index, node) of every stored MHT node, in index order. With ``problems``, a node
        that fails is recorded there and its subtree skipped; without, the failure raises."""
        if fmt.is_inline(self.size) or self.root == fmt.ZERO_ENTRY:
            return []
        n_mht = fmt.mht_nodes_for(fmt.data_nodes_for(self.size))
        out: list[tuple[int, bytearray]] = []
        todo = [0]
        while todo:
            j = heapq.heappop(todo)
            try:
                node = self._mht(j)
            except VolumeCorrupt as exc:
                if problems is None:
                    raise
                problems.append(("MHT", j, exc.message))
                continue
            out.append((j, node))
            for k in range(fmt.CHILDREN_PER_MHT):
                child = fmt.CHILDREN_PER_MHT * j + 1 + k
                off = fmt.child_entry_offset(k)
                if child < n_mht and node[off : off + ENTRY] != fmt.ZERO_ENTRY:
                    heapq.heappush(todo, child)
        return out

    def stored_data_runs(self, j: int, node: bytearray) -> list[tuple[int, int]]:
        """Runs ``[first, last)`` of stored (non-hole) data nodes under MHT node ``j``."""
        n_data = fmt.data_nodes_for(self.size)
        runs: list[tuple[int, int]] = []
        start = -1
        for i in range(j * D, min(n_data, (j + 1) * D) + 1):
            stored = False
            if i < min(n_data, (j + 1) * D):
                off = (i - j * D) * ENTRY
                stored = node[off : off + ENTRY] != fmt.ZERO_ENTRY
            if stored and start < 0:
                start = i
            elif not stored and start >= 0:
                runs.append((start, i))
                start = -1
        return runs

    def stored_extents(self) -> list[tuple[int, int]]:
        """Byte ranges ``[start, end)`` of the file that hold stored data (everything else
        reads as zeros), merged; cost is proportional to what is stored.

        Raises:
            VolumeCorrupt: a stored MHT node fails authentication.
        """
        if fmt.is_inline(self.size):
            return [(0, self.size)] if self.size else []
        extents: list[tuple[int, int]] = []
        for j, node in self._walk_mht(None):
            for first, last in self.stored_data_runs(j, node):
                start, end = first * NODE, min(self.size, last * NODE)
                if extents and extents[-1][1] == start:
                    extents[-1] = (extents[-1][0], end)
                else:
                    extents.append((start, end))
        for i in sorted(self.dirty_data):  # written since the last flush, not yet in the tree
            start, end = i * NODE, min(self.size, (i + 1) * NODE)
            extents.append((start, end))
        extents.sort()
        merged: list[tuple[int, int]] = []
        for start, end in extents:
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
            elif start < end:
                merged.append((start, end))
        return merged

    def verify_nodes(self) -> tuple[int, list[tuple[str, int, str]]]:
        """Authenticate every stored node of the tree, continuing past failures (for fsck).

        Holes are skipped without being walked, so the cost is proportional to what is
        stored, not to the logical size. Returns the number of nodes checked and (node kind,
        index, message) per failure; the data nodes under a failing MHT node cannot be checked
        and are reported with it.
        """
        problems: list[tuple[str, int, str]] = []
        checked = 0
        n_data = fmt.data_nodes_for(self.size)
        for j, node in self._walk_mht(problems):
            checked += 1
            for first, last in self.stored_data_runs(j, node):
                try:
                    self._load_data(first, last)
                    checked += last - first
                except VolumeCorrupt:
                    for i in range(first, last):
                        try:
                            self._load_data(i, i + 1)
                            checked += 1
                        except VolumeCorrupt as exc:
                            problems.append(("data", i, exc.message))
                for i in range(first, last):  # fsck reads each node once: keep memory flat
                    if i not in self.dirty_data:
                        self._forget(fmt.NODE_KIND_DATA, i)
        for _, j, _ in [p for p in problems if p[0] == "MHT"]:
            first, last = j * D, min(n_data, (j + 1) * D)
            problems.append(
                ("data", first, f"{self.what}: data nodes under MHT node {j} are unverifiable")
            )
        problems.sort(key=lambda p: (p[0] != "MHT", p[1]))
        return checked, problems

    # --- flushing -------------------------------------------------------------------------
    def ensure_host(self) -> HostFile:
        """The host file for writing, created on the first flush of a new file."""
        if self.readonly:
            raise VolumeError(f"{self.what}: the volume is open read-only")
        if self.host is None and self.meta_tag is None and not self.created_host:
            self.host = HostFile.open(self.host_path, create=True)
            self.created_host = True
        return self._host()

    def _encrypt_data(
        self,
        indices: list[int],
        batch: BatchCipher,
        source: Callable[[int], bytes | bytearray | memoryview] | None = None,
    ) -> list[tuple[int, bytes]]:
        """Encrypt data nodes (sorted; from memory, or from ``source(i)``); write fresh runs in
        place; return (slot, node) for the rest. Entries go into their (now dirty) MHT nodes;
        nodes taken from memory leave it."""
        out: list[tuple[int, bytes]] = []
        if indices and indices[0] == 0:
            self._inline = None  # node 0 now lives in the tree
        plain = self.data.__getitem__ if source is None else source
        host = self.ensure_host()
        pos = 0
        while pos < len(indices):
            start = pos
            j = indices[pos] // D
            while (
                pos + 1 < len(indices)
                and indices[pos + 1] == indices[pos] + 1
                and indices[pos + 1] // D == j
            ):
                pos += 1
            pos += 1
            run = indices[start:pos]
            buf = bytearray(len(run) * NODE + fmt.TAG_SIZE)
            view = memoryview(buf)
            mht = self._dirty_mht(j)
            tags = batch.seal_run(fmt.NODE_KIND_DATA, run, [plain(i) for i in run], view)
            key = batch.key
            off = (run[0] % D) * ENTRY
            mht[off : off + len(run) * ENTRY] = b"".join([key + tag for tag in tags])
            first_slot = fmt.data_slot(run[0])
            if first_slot >= self.fresh_from:
                host.write_slots(first_slot, view[: len(run) * NODE])
                self.unsynced = True
            else:
                for n, i in enumerate(run):
                    slot = fmt.data_slot(i)
                    node = bytes(view[n * NODE : n * NODE + NODE])
                    if slot >= self.fresh_from:
                        host.write_slots(slot, node)
                        self.unsynced = True
                    else:
                        out.append((slot, node))
        # Written nodes leave memory (the host page cache keeps them warm); keeping them would
        # only push useful clean nodes out of the LRU during streaming writes.
        if source is None:
            dirty_data, data = self.dirty_data, self.data
            for i in indices:
                dirty_data.discard(i)
                del data[i]
            self.cache.dirty_nodes -= len(indices)
        return out

    def writeback(self) -> int:
        """Encrypt and write dirty data nodes whose slots are fresh. Returns nodes written."""
        fresh = sorted(i for i in self.dirty_data if fmt.data_slot(i) >= self.fresh_from)
        if fresh:
            self._encrypt_data(fresh, BatchCipher(self.keys.volume_id, self.file_id))
        return len(fresh)

    def flush_commit(self) -> tuple[list[tuple[int, bytes]], fmt.MetaNode]:
        """Encrypt everything dirty for a commit.

        Returns the (slot, node) writes that must go through the journal and the new metadata
        node (its slot 0 write is among the journal writes unless the file is new). Call
        :meth:`committed` once the commit is durable.
        """
        journal: list[tuple[int, bytes]] = []
        generation = self.generation + 1
        if fmt.is_inline(self.size):
            if self.size:
                self._load_data(0, 1)
                inline = bytes(self.data[0][: self.size])
            else:
                inline = b""
            for i in list(self.data):
                self._forget(fmt.NODE_KIND_DATA, i)
            for j in list(self.mht):
                self._forget(fmt.NODE_KIND_MHT, j)
            self.root = fmt.ZERO_ENTRY
            self._inline = inline
            body = fmt.MetaBody(
                size=self.size, generation=generation, path=self.path, inline_data=inline
            )
        else:
            if self._inline is not None:
                # Leaving inline mode: node 0 exists only inside the old metadata node.
                self._load_data(0, 1)
                self._mark_dirty(0)
                self._inline = None
            batch = BatchCipher(self.keys.volume_id, self.file_id)
            if self.dirty_data:
                journal += self._encrypt_data(sorted(self.dirty_data), batch)
            journal += self._encrypt_mht(batch)
            body = fmt.MetaBody(
                size=self.size, generation=generation, path=self.path, root_entry=self.root
            )
        meta = self.keys.seal_meta(file_kind=self.file_kind, file_id=self.file_id, body=body)
        raw = meta.to_bytes()
        host = self.ensure_host()
        if self.fresh_from == 0:
            host.write_slots(0, raw)
            self.unsynced = True
        else:
            journal.append((0, raw))
        # Trailing holes are never written; the host file still spans the whole tree so that a
        # short host file always means truncation. Grown before the commit point, synced in step 1.
        need = fmt.slots_for(self.size)
        if host.length() < need * NODE:
            host.truncate_slots(need)
            self.unsynced = True
        return journal, meta

    def _encrypt_mht(self, batch: BatchCipher) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        host = self.ensure_host()
        heap = [-j for j in self.dirty_mht]
        heapq.heapify(heap)
        buf = bytearray(NODE + fmt.TAG_SIZE)
        view = memoryview(buf)
        while heap:
            j = -heapq.heappop(heap)
            if heap and -heap[0] == j:
                continue
            node = self.mht[j]
            entry = batch.encrypt_into(fmt.NODE_KIND_MHT, j, node, view)
            if j == 0:
                self.root = entry
            else:
                p, k = fmt.mht_parent(j)
                if p not in self.dirty_mht:
                    heapq.heappush(heap, -p)
                parent = self._dirty_mht(p)
                off = fmt.child_entry_offset(k)
                parent[off : off + ENTRY] = entry
            slot = fmt.mht_slot(j)
            if slot >= self.fresh_from:
                host.write_slots(slot, view[:NODE])
                self.unsynced = True
            else:
                out.append((slot, bytes(view[:NODE])))
            self.dirty_mht.discard(j)
            self.cache.dirty_nodes -= 1
            self.cache.add(self, fmt.NODE_KIND_MHT, j)
        return out

    def committed(self, meta: fmt.MetaNode) -> None:
        """The commit that carried ``meta`` is durable: advance the committed state."""
        self.meta_tag = meta.tag
        self.generation += 1
        self.meta_dirty = False
        self.unsynced = False
        self.created_host = False
        self.committed_size = self.size
        self.fresh_from = fmt.slots_for(self.size)

    def trim_host(self) -> None:
        """Drop host slots beyond the committed tree (only after a durable commit)."""
        host = self._host()
        if host.length() > self.fresh_from * NODE:
            host.truncate_slots(self.fresh_from)
