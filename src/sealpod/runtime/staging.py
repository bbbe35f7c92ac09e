"""The host side of a pod's mounts, in a mount namespace of its own.

When ``sealpod run`` runs as root it first moves into a private mount namespace, so that the
decrypted volume views and the staged rootfs exist there only: other processes of the host do
not see them in their mount table, and nothing is left mounted when the pod ends, whatever way
it ends (the namespace dies with its last process). What root on the host can still do — enter
the namespace with ``nsenter``, read ``/proc/PID/root`` — is written in docs/runtime.md.

Layout (a tmpfs over ``/run/sealpod``, in the private namespace only)::

    /run/sealpod/rootfs          the bundle's rootfs, bound read-only
    /run/sealpod/volumes/NAME    the FUSE mount point of volume NAME

The tmpfs is traversable by the workload's uid, which bubblewrap runs as, whatever the
permissions of the directories that hold the bundle.

Without root (development) there is no private namespace and no FUSE: the rootfs is used in
place and volumes are refused.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass
from pathlib import Path

from sealpod.errors import SandboxError

STAGE = Path("/run/sealpod")
_CLONE_NEWNS = 0x00020000
_MS_RDONLY = 0x1
_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_MS_REMOUNT = 0x20
_MS_BIND = 0x1000
_MS_REC = 0x4000
_MS_PRIVATE = 1 << 18

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise SandboxError(f"cannot {what}: {os.strerror(err)}")


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    _check(
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


@dataclass(frozen=True, slots=True)
class Stage:
    """Where the pod's host-side mounts are."""

    rootfs: Path
    volumes: Path
    private: bool  # in a private mount namespace (root); False: development mode

    def volume_mountpoint(self, name: str) -> Path:
        return self.volumes / name


def can_stage() -> bool:
    """True when this process may make a private mount namespace (it runs as root).

    Raises:
        Nothing.
    """
    return os.geteuid() == 0


def enter_stage(rootfs: Path) -> Stage:
    """Move this process into a private mount namespace and lay out the stage.

    Raises:
        SandboxError: the namespace or a mount is refused.
    """
    _check(_libc.unshare(_CLONE_NEWNS), "make a private mount namespace")
    # Nothing mounted from here on propagates back to the host's namespace.
    _mount("none", "/", None, _MS_REC | _MS_PRIVATE, None)
    try:
        STAGE.mkdir(mode=0o755, exist_ok=True)
    except OSError as exc:
        raise SandboxError(f"cannot create {STAGE}: {exc.strerror}") from exc
    _mount("sealpod", str(STAGE), "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=1m")
    stage_root = STAGE / "rootfs"
    volumes = STAGE / "volumes"
    stage_root.mkdir(mode=0o755)
    volumes.mkdir(mode=0o755)
    _mount(str(rootfs), str(stage_root), None, _MS_BIND | _MS_REC, None)
    _mount(
        "none",
        str(stage_root),
        None,
        _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV,
        None,
    )
    return Stage(rootfs=stage_root, volumes=volumes, private=True)


def unstaged(rootfs: Path) -> Stage:
    """The development layout: no namespace, the rootfs in place, no volumes.

    Raises:
        Nothing.
    """
    return Stage(rootfs=rootfs, volumes=Path("/nonexistent"), private=False)
