"""The volume-wide node cache: an LRU over the clean decrypted nodes of every open file.

Dirty nodes are not in the LRU (they stay with their file until flushed); the cache only counts
them, so that the volume can write back or commit when too much is dirty.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from sealpod.volume import format as fmt

if TYPE_CHECKING:
    from sealpod.volume.pfile import ProtectedFile


class NodeCache:
    """LRU over the clean nodes of every open file of a volume, bounded by a byte budget."""

    __slots__ = ("_held", "_lru", "budget_nodes", "dirty_nodes")

    def __init__(self, budget_bytes: int) -> None:
        self.budget_nodes = max(64, budget_bytes // fmt.NODE_SIZE)
        self._lru: OrderedDict[tuple[ProtectedFile, int, int], None] = OrderedDict()
        self.dirty_nodes = 0
        self._held = 0

    def __len__(self) -> int:
        return len(self._lru)

    def add(self, pf: ProtectedFile, kind: int, index: int) -> None:
        self._lru[(pf, kind, index)] = None
        if not self._held:
            self._evict()

    def touch(self, pf: ProtectedFile, kind: int, index: int) -> None:
        key = (pf, kind, index)
        if key in self._lru:
            self._lru.move_to_end(key)

    def remove(self, pf: ProtectedFile, kind: int, index: int) -> None:
        self._lru.pop((pf, kind, index), None)

    def hold(self) -> None:
        """Suspend eviction (during a commit, nodes must stay until the journal is applied)."""
        self._held += 1

    def release(self) -> None:
        self._held -= 1
        if not self._held:
            self._evict()

    def _evict(self) -> None:
        while len(self._lru) > self.budget_nodes:
            (pf, kind, index), _ = self._lru.popitem(last=False)
            pf.drop_clean(kind, index)
