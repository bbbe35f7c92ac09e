"""Per-client token buckets for the attestation endpoints.

:class:`RateLimiter` keeps its buckets in one process. :class:`SharedRateLimiter` keeps them in
an anonymous shared memory mapping made before ``sealpod kms serve --workers N`` forks, so the
workers enforce one limit together instead of N limits side by side (a client spread over N
workers' connections would otherwise get N times the rate). Replicas on other machines still
limit their own clients.

The shared table is open-addressed: each client address hashes (keyed BLAKE2b, so clients
cannot aim at each other's slots) to a slot and the 7 after it; a client not found there takes
an empty slot or the one idle longest. A POSIX record lock guards the table (the kernel drops
it if a worker dies holding it); ``time.monotonic`` is the system-wide monotonic clock, the same
in every worker.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import mmap
import os
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Protocol

from sealpod.errors import ConfigError

_SLOT = struct.Struct("<Qdd")  # key hash (0 = empty), tokens, last refill (monotonic seconds)
_PROBES = 8


def _allocate(fd: int, size: int) -> None:
    """Reserve the blocks now, not on first touch: a full disk fails at start with an error,
    instead of killing a worker later with SIGBUS. Where the filesystem cannot preallocate,
    a sparse file is the best there is."""
    try:
        os.posix_fallocate(fd, 0, size)
    except (AttributeError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
            raise
        os.ftruncate(fd, size)


class Limiter(Protocol):
    def allow(self, key: str) -> float:
        """0.0 if allowed, else seconds until a token is available."""
        ...


def _take(tokens: float, last: float, now: float, rate: float, burst: float) -> tuple[float, float]:
    """Refill by elapsed time, then take a token if one is there: (tokens left, wait)."""
    tokens = min(burst, tokens + max(0.0, now - last) * rate)
    if tokens >= 1.0:
        return tokens - 1.0, 0.0
    return tokens, (1.0 - tokens) / rate


class RateLimiter:
    """Token bucket per client address, in this process."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.clock = rate, float(burst), clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> float:
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens, wait = _take(tokens, last, now, self.rate, self.burst)
            self._buckets[key] = (tokens, now)
            if len(self._buckets) > 10_000:  # forget idle clients
                cutoff = now - self.burst / self.rate
                self._buckets = {k: v for k, v in self._buckets.items() if v[1] >= cutoff}
        return wait


class SharedRateLimiter:
    """Token bucket per client address, shared by this process and the processes it forks."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        slots: int = 8192,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if slots < _PROBES:
            raise ValueError(f"slots is {slots}, expected at least {_PROBES}")
        self.rate, self.burst, self.clock, self.slots = rate, float(burst), clock, slots
        # An unlinked file, mapped MAP_SHARED: the table is shared with every fork. Its POSIX
        # record lock (fcntl.lockf) guards the table across processes and, unlike a semaphore,
        # is released by the kernel when a worker dies holding it; threads of one process
        # take the thread lock first (record locks do not exclude threads of one process).
        size = slots * _SLOT.size
        self._file = tempfile.TemporaryFile(prefix="sealpod-ratelimit-")
        try:
            _allocate(self._file.fileno(), size)
            self._memory = mmap.mmap(self._file.fileno(), size)
        except OSError as exc:
            self._file.close()
            raise ConfigError(
                f"cannot set up the shared rate-limit table ({size} bytes in "
                f"{tempfile.gettempdir()}): {exc.strerror or exc}"
            ) from exc
        self._thread_lock = threading.Lock()
        self._salt = os.urandom(16)

    def _hash(self, key: str) -> int:
        digest = hashlib.blake2b(key.encode(), digest_size=8, key=self._salt).digest()
        return int.from_bytes(digest, "little") or 1  # 0 marks an empty slot

    def allow(self, key: str) -> float:
        h = self._hash(key)
        now = self.clock()
        mem, size = self._memory, _SLOT.size
        with self._locked():
            found = empty = idlest = -1
            idlest_last = float("inf")
            start = h % self.slots
            for i in range(_PROBES):
                offset = ((start + i) % self.slots) * size
                slot_hash, _, last = _SLOT.unpack_from(mem, offset)
                if slot_hash == h:
                    found = offset
                    break
                if slot_hash == 0:
                    empty = offset if empty < 0 else empty
                elif last < idlest_last:
                    idlest, idlest_last = offset, last
            if found >= 0:
                _, tokens, last = _SLOT.unpack_from(mem, found)
            else:  # a new client, or one whose idle slot was reused: a full bucket
                found = empty if empty >= 0 else idlest
                tokens, last = self.burst, now
            tokens, wait = _take(tokens, last, now, self.rate, self.burst)
            _SLOT.pack_into(mem, found, h, tokens, now)
        return wait

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = self._file.fileno()
        with self._thread_lock:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._memory.close()
        self._file.close()

    def __enter__(self) -> SharedRateLimiter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
