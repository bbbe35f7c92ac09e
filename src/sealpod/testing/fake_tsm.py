"""A fake configfs-tsm report tree, with a thread playing the kernel.

``FakeTsm(root, provider=..., producer=...)`` creates ``root`` (standing for
``/sys/kernel/config/tsm/report``). Its :meth:`FakeTsm.mkdir`/:meth:`FakeTsm.rmdir` are the
:class:`sealpod.tee.tsm.ConfigfsOps` a :class:`~sealpod.tee.tsm.TsmBackend` uses, and populate an
entry as the kernel's ``make_item`` would: ``provider`` (and for ``sev_guest`` ``privlevel_floor``)
as plain files; ``inblob``/``privlevel`` as input FIFOs whose writes bump ``generation``;
``generation``, ``outblob`` and ``auxblob`` as output FIFOs. Reading ``outblob`` calls
``producer(inblob, privlevel) -> (outblob, auxblob)`` — :func:`sim_producer` makes simulated TDX
quotes and SNP reports.

Knobs for the edge cases a backend must survive: ``provider=None`` (mkdir fails with ENXIO, as
with no TSM driver), ``omit={"provider"}`` (an entry without that attribute), ``races=n`` (the
first ``n`` outblob reads find that "another writer" rewrote ``inblob`` first).
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from sealpod.tee.tsm import TsmBackend
from sealpod.testing._fifo import FifoServedFake, FifoServer

#: ``producer(inblob, privlevel) -> (outblob, auxblob)``
Producer = Callable[[bytes, int], tuple[bytes, bytes]]


@dataclass
class _Entry:
    provider: str
    generation: int = 0
    inblob: bytes | None = None
    privlevel: int = 0
    auxblob: bytes = b""
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeTsm(FifoServedFake):
    """The fake tree and its kernel thread (use as a context manager)."""

    def __init__(
        self,
        root: Path,
        *,
        provider: str | None = "tdx_guest",
        producer: Producer,
        races: int = 0,
        omit: Collection[str] = (),
        privlevel_floor: int = 0,
    ) -> None:
        self.root = root
        self.provider = provider
        self.producer = producer
        self.races = races
        self.omit = frozenset(omit)
        self.privlevel_floor = privlevel_floor
        self.outblob_reads = 0
        self.entries_made = 0
        self._entries: dict[Path, _Entry] = {}
        self._server = FifoServer()
        root.mkdir(parents=True, exist_ok=True)

    def live_entries(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir())

    def backend(self, *, privlevel: int | None = None, attempts: int = 3) -> TsmBackend:
        """A :class:`TsmBackend` wired to this tree."""
        return TsmBackend(self.root, ops=self, privlevel=privlevel, attempts=attempts)

    # --- ConfigfsOps ----------------------------------------------------------------------------
    def mkdir(self, path: Path) -> None:
        if self.provider is None:
            raise OSError(errno.ENXIO, "No such device or address", str(path))
        os.mkdir(path, 0o700)
        self.entries_made += 1
        entry = _Entry(provider=self.provider)
        self._entries[path] = entry
        if "provider" not in self.omit:
            (path / "provider").write_text(self.provider + "\n")
        self._server.add_input(path / "inblob", lambda data: self._on_inblob(entry, data))
        self._server.add_output(path / "generation", lambda: f"{entry.generation}\n".encode())
        self._server.add_output(path / "outblob", lambda: self._on_outblob(entry))
        if self.provider == "sev_guest":
            (path / "privlevel_floor").write_text(f"{self.privlevel_floor}\n")
            self._server.add_input(path / "privlevel", lambda d: self._on_privlevel(entry, d))
            self._server.add_output(path / "auxblob", lambda: entry.auxblob)

    def rmdir(self, path: Path) -> None:
        self._server.remove_under(path)
        self._entries.pop(path, None)
        for name in ("provider", "privlevel_floor"):
            (path / name).unlink(missing_ok=True)
        os.rmdir(path)

    # --- the kernel's side ----------------------------------------------------------------------
    def _on_inblob(self, entry: _Entry, data: bytes) -> None:
        with entry.lock:
            entry.inblob = data[:64]
            entry.generation += 1

    def _on_privlevel(self, entry: _Entry, data: bytes) -> None:
        with entry.lock:
            entry.privlevel = int(data.decode().strip() or "0")
            entry.generation += 1

    def _on_outblob(self, entry: _Entry) -> bytes:
        with entry.lock:
            self.outblob_reads += 1
            if self.races > 0:
                # Another process wrote the same entry between our inblob and outblob.
                self.races -= 1
                entry.inblob = b"\xee" * 64
                entry.generation += 1
            if entry.inblob is None:
                return b""  # the kernel answers EINVAL
            out, entry.auxblob = self.producer(entry.inblob, entry.privlevel)
            return out
