"""Kernel pseudo-files (Gramine's ``/dev/attestation/*``, configfs-tsm attributes): one
``write(2)`` per value and a bounded read, with the failures both backends name the same way.

Nothing here creates files (no ``O_CREAT``): a missing attribute means the TEE interface is not
there, which is :class:`TeeUnavailable`; anything else going wrong while talking to it is
:class:`EvidenceGenerationError`.
"""

from __future__ import annotations

import os
from pathlib import Path

from sealpod.errors import EvidenceGenerationError, TeeUnavailable


def write_attribute(path: Path, data: bytes, *, what: str, source: str, absent: str) -> None:
    """Write ``data`` to ``path`` in a single ``write(2)``, as pseudo-files require.

    ``source`` prefixes every message ("gramine", "configfs-tsm"); ``absent`` says what a
    missing ``path`` means.

    Raises:
        TeeUnavailable: ``path`` does not exist.
        EvidenceGenerationError: it cannot be opened or written, or takes only part of ``data``.
    """
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError as exc:
        raise TeeUnavailable(f"{source}: {absent}") from exc
    except OSError as exc:
        raise EvidenceGenerationError(f"{source}: opening {what} failed: {exc}") from exc
    try:
        written = os.write(fd, data)
    except OSError as exc:
        raise EvidenceGenerationError(f"{source}: writing {what} failed: {exc}") from exc
    finally:
        os.close(fd)
    if written != len(data):
        raise EvidenceGenerationError(f"{source}: wrote {written} of {len(data)} bytes to {what}")


def read_attribute(path: Path, *, what: str, limit: int, source: str, absent: str) -> bytes:
    """Read ``path`` whole, refusing more than ``limit`` bytes.

    Raises:
        TeeUnavailable: ``path`` does not exist.
        EvidenceGenerationError: it cannot be read, or holds more than ``limit`` bytes.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError as exc:
        raise TeeUnavailable(f"{source}: {absent}") from exc
    except OSError as exc:
        raise EvidenceGenerationError(f"{source}: reading {what} failed: {exc}") from exc
    if len(data) > limit:
        raise EvidenceGenerationError(f"{source}: {what} exceeds {limit} bytes")
    return data
