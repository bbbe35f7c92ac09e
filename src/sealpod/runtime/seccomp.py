"""The default seccomp filter of a sealed pod, compiled by libseccomp (through ``pyseccomp``).

A deny list in the spirit of the container engines' default profiles: every system call an
ordinary service needs stays allowed; those that reach the kernel's or the host's state beyond
the container, load code into the kernel, or read other processes' memory fail with EPERM.
Namespaces are already refused by ``--disable-userns``; the filter is a second wall, and it
keeps a workload from re-mounting or pivoting inside its own namespaces.

The BPF program is produced by libseccomp and handed to bubblewrap through a pipe
(``--seccomp FD``); nothing here assembles BPF by hand.
"""

from __future__ import annotations

import errno
import os
import threading

from sealpod.errors import SandboxError

#: Denied with EPERM. Grouped by what they would let a workload do.
DENIED_SYSCALLS: tuple[str, ...] = (
    # kernel code and kernel-wide state
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "bpf", "perf_event_open", "lookup_dcookie", "syslog", "acct", "swapon", "swapoff",
    "reboot", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "quotactl",
    "nfsservctl", "iopl", "ioperm", "create_module", "get_kernel_syms", "query_module",
    "uselib", "ustat", "sysfs", "_sysctl", "vhangup",
    # mounts and namespaces (the sandbox's layout is final)
    "mount", "umount2", "pivot_root", "chroot", "setns", "unshare", "move_mount",
    "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    # other processes' memory and handles, keyrings
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "open_by_handle_at", "name_to_handle_at", "keyctl", "add_key", "request_key",
    # a page-fault handler in user space widens kernel race windows
    "userfaultfd",
)  # fmt: skip

#: ioctl(TIOCSTI) pushes characters into a terminal's input queue.
_TIOCSTI = 0x5412


def default_filter() -> bytes:
    """The compiled BPF program of the default filter.

    Raises:
        SandboxError: libseccomp (Debian ``libseccomp2``) or ``pyseccomp`` is missing.
    """
    try:
        import pyseccomp as seccomp
    except (ImportError, OSError, RuntimeError) as exc:
        raise SandboxError(
            "cannot build the seccomp filter: libseccomp is not available (install Debian"
            f" package libseccomp2 and the Python package pyseccomp): {exc}"
        ) from exc
    flt = seccomp.SyscallFilter(seccomp.ALLOW)
    for name in DENIED_SYSCALLS:
        try:
            flt.add_rule(seccomp.ERRNO(errno.EPERM), name)
        except (OSError, ValueError, RuntimeError):
            continue  # not a system call on this architecture
    flt.add_rule(
        seccomp.ERRNO(errno.EPERM), "ioctl", seccomp.Arg(1, seccomp.MASKED_EQ, 0xFFFFFFFF, _TIOCSTI)
    )
    read_fd, write_fd = os.pipe()
    chunks: list[bytes] = []
    reader = threading.Thread(target=_drain, args=(read_fd, chunks), daemon=True)
    reader.start()
    try:
        with os.fdopen(write_fd, "wb", closefd=True) as out:
            flt.export_bpf(out)
    finally:
        reader.join()
    program = b"".join(chunks)
    if not program or len(program) % 8:
        raise SandboxError("libseccomp produced no valid BPF program")
    return program


def _drain(fd: int, chunks: list[bytes]) -> None:
    with os.fdopen(fd, "rb", closefd=True) as src:
        while chunk := src.read(65536):
            chunks.append(chunk)
