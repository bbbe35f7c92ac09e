"""A Debian root filesystem from packages, with ``mmdebstrap``: :func:`build_debian_rootfs`.

One generic invocation for every image sealpod makes from Debian packages (the runtime base of
``sealpod image``; catalog images can share it): a :class:`DebianRootfs` says which suite,
variant and packages, and which hooks run inside the new tree before it is finished. The
command line is built by one pure function (:func:`mmdebstrap_argv`), so a test can read it.

Reproducibility: ``SOURCE_DATE_EPOCH`` is set for the run (mmdebstrap then clamps times and
drops its logs; Python byte-code compiled in hooks uses hash-based ``.pyc``), documentation
and locales are left out, and device nodes are removed from ``/dev`` (an engine mounts its
own), so the tree can be packed as a container layer. The same packages give the same tree;
a newer package version in the archive gives a new tree, which is why callers cache by inputs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sealpod.errors import ConfigError, ToolError

_PACKAGE_RE = re.compile(r"[a-z0-9][a-z0-9+.-]{0,99}")
_SUITE_RE = re.compile(r"[a-z][a-z0-9-]{1,30}")
_VARIANTS = ("extract", "custom", "essential", "apt", "required", "minbase", "buildd", "important",
             "standard")  # fmt: skip
#: What the tree never needs in a container (saves about a third of its size); licences stay.
DPKG_EXCLUDES = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/lintian/*",
)
#: The archive, its updates and its security updates (a sealed image should carry the fixes).
DEBIAN_MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
_MIRROR_RE = re.compile(r"deb https?://[^\s'\"]+( [a-z0-9][a-z0-9/.-]*){2,8}")
BUILD_TIMEOUT_SECS = 1800


@dataclass(frozen=True, slots=True, kw_only=True)
class DebianRootfs:
    """What to build: ``suite`` (e.g. ``bookworm``), ``variant``, extra ``packages`` and
    ``customize_hooks`` (mmdebstrap hooks: shell commands run with ``$1`` = the new root, or
    its special ``copy-in``/``sync-in`` forms)."""

    suite: str = "bookworm"
    variant: str = "essential"
    packages: tuple[str, ...] = ()
    customize_hooks: tuple[str, ...] = ()
    mirrors: tuple[str, ...] = DEBIAN_MIRRORS  # sources.list lines
    source_date_epoch: int = 0

    def check(self) -> None:
        """Refuse names that are not Debian suite / package names.

        Raises:
            ConfigError: naming the bad value.
        """
        if not _SUITE_RE.fullmatch(self.suite):
            raise ConfigError(f"Debian suite is {self.suite!r}, expected a name such as bookworm")
        if self.variant not in _VARIANTS:
            raise ConfigError(
                f"mmdebstrap variant is {self.variant!r}, expected one of {_VARIANTS}"
            )
        for package in self.packages:
            if not _PACKAGE_RE.fullmatch(package):
                raise ConfigError(f"Debian package name is {package[:80]!r}, expected [a-z0-9+.-]")
        for mirror in self.mirrors:
            if not _MIRROR_RE.fullmatch(mirror):
                raise ConfigError(
                    f"mirror is {mirror[:80]!r}, expected 'deb http(s)://URL SUITE ...'"
                )
        if self.source_date_epoch < 0:
            raise ConfigError("source_date_epoch must not be negative")


def mmdebstrap_argv(
    spec: DebianRootfs, target: Path, *, executable: str = "mmdebstrap"
) -> list[str]:
    """The mmdebstrap command line that builds ``spec`` into the directory ``target``.

    Raises:
        ConfigError: from :meth:`DebianRootfs.check`.
    """
    spec.check()
    argv = [executable, "--quiet", f"--variant={spec.variant}", "--mode=auto",
            "--format=directory"]  # fmt: skip
    if spec.packages:
        argv.append("--include=" + ",".join(spec.packages))
    argv += [f"--dpkgopt={option}" for option in DPKG_EXCLUDES]
    argv += [f"--customize-hook={hook}" for hook in spec.customize_hooks]
    return [*argv, spec.suite, str(target), *spec.mirrors]


def build_debian_rootfs(spec: DebianRootfs, target: Path, *, log: Path | None = None) -> None:
    """Build ``spec`` into ``target`` (which must not exist); on failure nothing is left.

    Needs root or unprivileged user namespaces (mmdebstrap picks the mode) and the Debian
    archive (the machine's apt mirror).

    Raises:
        ConfigError: ``spec`` is invalid or ``target`` exists.
        ToolError: mmdebstrap is not installed or failed (its last lines are quoted;
            the whole output goes to ``log`` when given).
    """
    executable = shutil.which("mmdebstrap")
    if executable is None:
        raise ToolError("mmdebstrap is not installed (Debian: apt-get install mmdebstrap)")
    if target.exists() or target.is_symlink():
        raise ConfigError(f"{target} already exists")
    argv = mmdebstrap_argv(spec, target, executable=executable)
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(spec.source_date_epoch), "LC_ALL": "C.UTF-8"}
    try:
        result = subprocess.run(  # noqa: S603 - argv built from checked values, no shell
            argv, env=env, capture_output=True, text=True, errors="replace",
            stdin=subprocess.DEVNULL,  # a non-tty stdin would be read as sources.list
            timeout=BUILD_TIMEOUT_SECS, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise ToolError(f"mmdebstrap took longer than {BUILD_TIMEOUT_SECS} s") from exc
    if log is not None:
        log.write_text(result.stdout + result.stderr, encoding="utf-8")
    if result.returncode != 0:
        shutil.rmtree(target, ignore_errors=True)
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-8:])
        raise ToolError(f"mmdebstrap failed with exit code {result.returncode}:\n{tail}")
    # mmdebstrap reports success even when it could not unmount /proc or /sys ("target is
    # busy"); packing a live procfs into a layer must never happen.
    _unmount_leftovers(target)
    # An empty /dev (the engine mounts its own; device nodes cannot go into a layer) and no
    # package caches.
    for leftover in ("dev", "var/cache/apt", "var/lib/apt/lists"):
        _empty_dir(target / leftover)


def mounts_under(mountinfo: str, root: Path) -> list[str]:
    """Mount points at or below ``root`` in a ``/proc/self/mountinfo`` text, deepest first.

    Raises:
        Nothing: malformed lines are skipped.
    """
    prefix = str(root).rstrip("/")
    found = []
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) < 5:
            continue
        # Field 5 is the mount point, with space, tab, newline and backslash octal-escaped.
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return sorted(found, key=lambda p: p.count("/"), reverse=True)


def _unmount_leftovers(target: Path, attempts: int = 10) -> None:
    for _ in range(attempts):
        left = mounts_under(Path("/proc/self/mountinfo").read_text(), target)
        if not left:
            return
        for point in left:
            subprocess.run(["umount", point], capture_output=True, check=False)  # noqa: S603, S607
        time.sleep(0.5)
    left = mounts_under(Path("/proc/self/mountinfo").read_text(), target)
    if left:
        raise ToolError(f"mmdebstrap left {', '.join(left)} mounted (busy); not packing it")


def _empty_dir(directory: Path) -> None:
    if directory.is_symlink() or not directory.is_dir():
        return
    for entry in os.scandir(directory):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)
