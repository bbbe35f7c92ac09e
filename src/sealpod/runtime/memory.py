"""Keeping released secrets out of reach while ``sealpod run`` holds them.

* :func:`harden_process`: no core dumps (``RLIMIT_CORE`` 0) and not dumpable
  (``PR_SET_DUMPABLE`` 0: no ptrace attach by same-uid processes, ``/proc/PID/mem`` and
  ``environ`` readable by root only).
* :class:`SecretStore`: the released values copied into ``memfd_secret`` memory (Linux >= 5.14:
  pages removed from the kernel's direct map, so not even the kernel reads them by accident,
  never swapped), handed to the sandbox straight from there, and zeroed with :meth:`wipe` once
  the workload runs. Where the kernel lacks ``memfd_secret`` the store falls back to anonymous
  memory that is locked (not swapped) and left out of core dumps, and says so.

Python's own copies (the decrypted JWE bytes) cannot be wiped reliably; the store shortens
their life to the attestation call and docs/runtime.md says what remains.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import resource
import time
from dataclasses import dataclass

_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36
# memfd_secret(2) has the same number on x86_64 and aarch64.
_SYS_MEMFD_SECRET = 447
_MADV_DONTDUMP = 16

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def harden_process() -> None:
    """No core dumps and no ptrace for this process (inherited by what it forks), and this
    process the reaper of its orphaned descendants (a sandbox's reaper outliving bubblewrap
    must not become a zombie that the host's init never collects).

    Raises:
        Nothing: each step is best effort on kernels that refuse it.
    """
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError):
        pass
    _libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def reap_orphans(timeout_secs: float = 2.0) -> None:
    """Collect the children left (orphans reparented to this subreaper), waiting at most
    ``timeout_secs`` for those still on their way out.

    Raises:
        Nothing.
    """
    deadline = time.monotonic() + timeout_secs
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)


def _memfd_secret(size: int) -> mmap.mmap | None:
    fd = _libc.syscall(_SYS_MEMFD_SECRET, 0)
    if fd < 0:
        return None
    try:
        os.ftruncate(fd, size)
        return mmap.mmap(fd, size)
    except OSError:
        return None
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class _Slot:
    offset: int
    length: int


class SecretStore:
    """Secret values in one block of protected memory, by name."""

    def __init__(self, values: dict[str, bytes]) -> None:
        size = max(mmap.PAGESIZE, sum(len(v) for v in values.values()))
        size = -(-size // mmap.PAGESIZE) * mmap.PAGESIZE
        region = _memfd_secret(size)
        self.kind = "memfd_secret"
        if region is None:
            self.kind = "locked anonymous memory"
            region = mmap.mmap(-1, size)
            address = ctypes.addressof(ctypes.c_char.from_buffer(region))
            _libc.mlock(ctypes.c_void_p(address), ctypes.c_size_t(size))
            _libc.madvise(ctypes.c_void_p(address), ctypes.c_size_t(size), _MADV_DONTDUMP)
        self._region: mmap.mmap | None = region
        self._slots: dict[str, _Slot] = {}
        offset = 0
        for name, value in values.items():
            region[offset : offset + len(value)] = value
            self._slots[name] = _Slot(offset, len(value))
            offset += len(value)

    def __repr__(self) -> str:
        return f"SecretStore(names={sorted(self._slots)}, kind={self.kind!r})"

    def names(self) -> list[str]:
        return list(self._slots)

    def view(self, name: str) -> memoryview:
        """The value of ``name``, without a copy (valid until :meth:`wipe`).

        Raises:
            KeyError: no such secret; ValueError: the store was wiped.
        """
        if self._region is None:
            raise ValueError("the secret store was wiped")
        slot = self._slots[name]
        return memoryview(self._region)[slot.offset : slot.offset + slot.length]

    def copy(self, name: str) -> bytes:
        """A copy of ``name`` for APIs that need bytes (a volume key, an env value).

        Raises:
            KeyError, ValueError: as :meth:`view`.
        """
        with self.view(name) as view:
            return bytes(view)

    def wipe(self) -> None:
        """Zero every value and release the memory. Idempotent.

        Raises:
            Nothing.
        """
        region, self._region = self._region, None
        if region is None:
            return
        region[:] = bytes(len(region))
        try:
            region.close()
        except BufferError:
            pass  # a view is still exported; the zeroed pages go with the process
