"""Volume version counters: the rollback defence that outlives a restart.

Every commit raises the volume header's counter; the same number is recorded in a
:class:`Freshness` store that the host cannot roll back (the KMS, in production). Opening a
volume whose header counter is *older* than the store's is refused with ``RollbackDetected``.
A header *newer* than the store is accepted: that is a crash between the commit and the
counter update, and the store is caught up.

The interface is deliberately tiny so that a KMS-backed store is a thin HTTP client:

* ``get(volume_id) -> int`` — the last counter recorded (0 for an unknown volume);
* ``advance(volume_id, expected_old, new)`` — compare-and-set; raises if the stored value is
  not ``expected_old`` (someone else moved it: the volume is used twice).

``LocalFreshness`` keeps counters in files. It protects against rollback only as far as its
directory is out of the host's reach (sealed storage inside the TEE, or a disk the host does not
control); against a host that can rewrite it, use the KMS-backed store.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol, runtime_checkable

from sealpod._files import write_atomic
from sealpod.errors import RollbackDetected, VolumeError

_VOLUME_ID = re.compile(r"^[0-9a-f]{32}$")


@runtime_checkable
class Freshness(Protocol):
    """A store of monotonic volume version counters."""

    def get(self, volume_id: str) -> int:
        """The recorded counter of ``volume_id`` (hex), 0 when the volume is unknown.

        Raises:
            VolumeError: the store is unreachable or unreadable.
        """
        ...

    def advance(self, volume_id: str, expected_old: int, new: int) -> None:
        """Set the counter to ``new`` if it still is ``expected_old``.

        Raises:
            RollbackDetected: the stored counter is not ``expected_old``.
            VolumeError: the store is unreachable or ``new <= expected_old``.
        """
        ...


def _check(volume_id: str, expected_old: int | None = None, new: int | None = None) -> None:
    if not _VOLUME_ID.match(volume_id):
        raise VolumeError(f"volume id {volume_id!r} is not 32 lowercase hex digits")
    if expected_old is not None and new is not None and new <= expected_old:
        raise VolumeError(f"counter must increase: new is {new}, expected > {expected_old}")


class MemoryFreshness:
    """Counters in a dict: for tests and for volumes whose lifetime is one process."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    def get(self, volume_id: str) -> int:
        _check(volume_id)
        return self.values.get(volume_id, 0)

    def advance(self, volume_id: str, expected_old: int, new: int) -> None:
        _check(volume_id, expected_old, new)
        current = self.values.get(volume_id, 0)
        if current != expected_old:
            raise RollbackDetected(
                f"volume counter store holds {current}, expected {expected_old} "
                "(is the volume open twice?)"
            )
        self.values[volume_id] = new


class LocalFreshness:
    """One small file per volume under ``directory``, replaced atomically and fsynced."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, volume_id: str) -> Path:
        return self.directory / f"{volume_id}.counter"

    def get(self, volume_id: str) -> int:
        _check(volume_id)
        try:
            text = self._path(volume_id).read_text(encoding="ascii")
        except FileNotFoundError:
            return 0
        except (OSError, UnicodeDecodeError) as exc:
            raise VolumeError(f"cannot read the counter of volume {volume_id}: {exc}") from exc
        try:
            value = int(text.strip())
        except ValueError as exc:
            raise VolumeError(f"counter file of volume {volume_id} does not hold a number") from exc
        if value < 0:
            raise VolumeError(f"counter of volume {volume_id} is {value}, expected >= 0")
        return value

    def advance(self, volume_id: str, expected_old: int, new: int) -> None:
        _check(volume_id, expected_old, new)
        current = self.get(volume_id)
        if current != expected_old:
            raise RollbackDetected(
                f"volume counter store holds {current}, expected {expected_old} "
                "(is the volume open twice?)"
            )
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomic(self._path(volume_id), f"{new}\n".encode())  # never through a symlink
        except OSError as exc:
            raise VolumeError(f"cannot record the counter of volume {volume_id}: {exc}") from exc


class UnsafeNoFreshness:
    """No rollback protection across restarts. Only for throw-away volumes and benchmarks."""

    def get(self, volume_id: str) -> int:
        _check(volume_id)
        return 0

    def advance(self, volume_id: str, expected_old: int, new: int) -> None:
        _check(volume_id, expected_old, new)
