"""Root file systems for catalog entries: built from Debian packages by ``mmdebstrap`` through
:mod:`sealpod.rootfs.debian` (cached),
or taken from a user's own ``docker save`` / OCI archive; then the recipe's files are laid on.

Reproducibility: the suite is pinned, ``SOURCE_DATE_EPOCH`` is fixed, documentation and locales
are excluded, and what differs between two builds of the same package set is removed after the
build (:data:`VOLATILE`: apt's caches and lists, logs, ldconfig's aux cache, backup copies of
the user databases, device nodes). Owners and times do not enter the bundle manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sealpod.catalog.model import Layout, Recipe
from sealpod.errors import ArchiveError, ConfigError, ToolError
from sealpod.rootfs.debian import DEBIAN_MIRRORS, DPKG_EXCLUDES, DebianRootfs, build_debian_rootfs

SUITE = "bookworm"
SOURCE_DATE_EPOCH = 1_700_000_000
#: Paths (relative to the root) that differ from build to build or hold build-host state.
VOLATILE = (
    "var/cache/apt",
    "var/lib/apt/lists",
    "var/log",
    "var/cache/ldconfig/aux-cache",
    "var/cache/debconf/config.dat-old",
    "var/cache/debconf/templates.dat-old",
    "var/lib/dpkg/status-old",
    "var/lib/dpkg/diversions-old",
    "etc/passwd-",
    "etc/group-",
    "etc/shadow-",
    "etc/gshadow-",
    "etc/machine-id",
    "var/lib/dbus/machine-id",
    "etc/ssl/private/ssl-cert-snakeoil.key",  # a private key made at install time: never
    "etc/ssl/certs/ssl-cert-snakeoil.pem",
)
#: Bumped whenever the build recipe above changes, so old cache entries are not reused.
BUILD_FORMAT = 2
MAX_BUILD_SECONDS = 1800


@dataclass(frozen=True, slots=True, kw_only=True)
class RootfsSource:
    """Where a rootfs came from: ``mmdebstrap`` (with its cache key) or an image archive."""

    kind: str  # "mmdebstrap" | "image"
    cache_key: str | None
    cached: bool
    path: Path


def cache_key(recipe: Recipe) -> str:
    """The cache key of ``recipe``'s Debian rootfs: everything that decides its content."""
    data = {
        "format": BUILD_FORMAT,
        "suite": SUITE,
        "mirrors": DEBIAN_MIRRORS,
        "packages": sorted(recipe.packages),
        "excludes": DPKG_EXCLUDES,
        "builder": "sealpod.rootfs.debian",
        "volatile": VOLATILE,
        "epoch": SOURCE_DATE_EPOCH,
    }
    raw = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()[:24]


def debian_rootfs(recipe: Recipe, cache_dir: Path) -> RootfsSource:
    """The cached Debian rootfs of ``recipe``'s packages, built by mmdebstrap if missing.

    Raises:
        ToolError: mmdebstrap is missing, fails or times out; the cache is unwritable.
    """
    key = cache_key(recipe)
    final = cache_dir / f"{recipe.name}-{key}"
    if (final / "etc" / "passwd").is_file():
        return RootfsSource(kind="mmdebstrap", cache_key=key, cached=True, path=final)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ToolError(f"cannot create the cache {cache_dir}: {exc.strerror}") from exc
    if shutil.which("mmdebstrap") is None:
        raise ToolError(
            "mmdebstrap is not installed (Debian package mmdebstrap; scripts/sysdeps.sh installs"
            " it), or pass --image ARCHIVE to start from your own image"
        )
    work = cache_dir / f".{recipe.name}-{key}.{secrets.token_hex(4)}"
    spec = DebianRootfs(
        suite=SUITE, packages=tuple(recipe.packages), source_date_epoch=SOURCE_DATE_EPOCH
    )
    try:
        build_debian_rootfs(spec, work)
        scrub(work)
        try:
            os.rename(work, final)
        except OSError:
            if not (final / "etc" / "passwd").is_file():  # not a concurrent build that won
                raise
    except OSError as exc:
        raise ToolError(f"cannot build into {cache_dir}: {exc.strerror or exc}") from exc
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return RootfsSource(kind="mmdebstrap", cache_key=key, cached=False, path=final)


def scrub(root: Path) -> None:
    """Remove :data:`VOLATILE` paths and device nodes (the sandbox mounts its own ``/dev``).

    Raises:
        OSError: a path cannot be removed.
    """
    for rel in VOLATILE:
        path = root / rel
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
            path.mkdir(mode=0o755)
        elif path.exists() or path.is_symlink():
            path.unlink()
    dev = root / "dev"
    if dev.is_dir():
        for entry in list(dev.iterdir()):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def copy_rootfs(source: Path, dest: Path) -> None:
    """Copy a cached rootfs to ``dest`` (which must not exist), keeping symlinks as links.

    Raises:
        ToolError: the copy fails.
    """
    try:
        shutil.copytree(source, dest, symlinks=True)
    except (OSError, shutil.Error) as exc:
        raise ToolError(f"cannot copy the rootfs to {dest}: {exc}") from exc


def import_image(archive: Path, dest: Path) -> RootfsSource:
    """Unpack a ``docker save`` / OCI archive or layout into ``dest`` (hostile-input safe).

    Raises:
        ArchiveError: a malformed or hostile archive.
        ConfigError: image import support is not installed.
    """
    from sealpod.build.image import materialize_image

    materialize_image(archive, dest)
    return RootfsSource(kind="image", cache_key=None, cached=False, path=dest)


# --- laying the recipe's files on ------------------------------------------------------------
def _open_dir(root_fd: int, parts: Sequence[str], *, create: bool) -> int:
    """Open the directory ``parts`` under ``root_fd`` without following any symlink.

    With ``create``, missing directories are made and each one on the way is made readable and
    searchable by all: a bundle keeps modes but not owners, so a package's ``0750 root:redis``
    directory would lock the service's own config away from it.
    """
    fd = os.dup(root_fd)
    try:
        for part in parts:
            if create:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            nfd = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = nfd
            if create:
                os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) | 0o055)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _split(path: str) -> list[str]:
    parts = [p for p in path.split("/") if p]
    if not path.startswith("/") or any(p in (".", "..") for p in parts) or not parts:
        raise ConfigError(f"recipe path {path!r} is not a normalized absolute path")
    return parts


def write_file(root: Path, path: str, data: bytes, mode: int) -> None:
    """Write ``data`` at ``path`` inside ``root``, replacing a file there, never through a link.

    Raises:
        ArchiveError: a directory on the way is a symlink or not a directory.
        ConfigError: ``path`` is not a normalized absolute path.
    """
    parts = _split(path)
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        dir_fd = _open_dir(root_fd, parts[:-1], create=True)
    except OSError as exc:
        os.close(root_fd)
        raise ArchiveError(
            f"cannot write {path} into the image: a parent is a symlink or not a directory"
            f" ({exc.strerror})"
        ) from exc
    os.close(root_fd)
    try:
        try:
            os.unlink(parts[-1], dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        except IsADirectoryError as exc:
            raise ArchiveError(f"cannot write {path}: the image has a directory there") from exc
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(parts[-1], flags, mode, dir_fd=dir_fd)
        try:
            os.write(fd, data)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)


def make_dir(root: Path, path: str) -> None:
    """Create directory ``path`` (and parents) inside ``root`` without following links.

    Raises:
        ArchiveError: a component is a symlink or a file.
        ConfigError: ``path`` is not a normalized absolute path.
    """
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.close(_open_dir(root_fd, _split(path), create=True))
    except OSError as exc:
        raise ArchiveError(
            f"cannot create {path} in the image: a component is a symlink or a file"
        ) from exc
    finally:
        os.close(root_fd)


def read_small(root: Path, path: str, limit: int = 1 << 20) -> str:
    """A small text file inside ``root`` ('' when absent), read without following links."""
    parts = _split(path)
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        dir_fd = _open_dir(root_fd, parts[:-1], create=False)
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise ArchiveError(f"cannot read {path} in the image ({exc.strerror})") from exc
    finally:
        os.close(root_fd)
    try:
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise ArchiveError(f"cannot read {path} in the image ({exc.strerror})") from exc
    finally:
        os.close(dir_fd)
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ArchiveError(f"{path} in the image is larger than {limit} bytes")
    return data.decode("utf-8", errors="replace")


def ensure_user(root: Path, user: str, uid: int) -> None:
    """Add the service account ``user`` (uid = gid = ``uid``) when the image lacks it.

    Raises:
        ArchiveError: /etc/passwd or /etc/group cannot be read or written safely.
    """
    passwd = read_small(root, "/etc/passwd")
    if any(line.split(":", 1)[0] == user for line in passwd.splitlines()):
        return
    group = read_small(root, "/etc/group")
    line = f"{user}:x:{uid}:{uid}::/nonexistent:/usr/sbin/nologin\n"
    write_file(root, "/etc/passwd", (_nl(passwd) + line).encode(), 0o644)
    if not any(g.split(":", 1)[0] == user for g in group.splitlines()):
        write_file(root, "/etc/group", (_nl(group) + f"{user}:x:{uid}:\n").encode(), 0o644)


def _nl(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


def remove_paths(root: Path, paths: Sequence[str]) -> None:
    """Remove ``paths`` (relative to ``root``) where present; a link is removed, not followed.

    Raises:
        ArchiveError: a parent of a path is a symlink or not a directory.
        ConfigError: a path is not normalized.
    """
    for rel in paths:
        parts = _split("/" + rel)
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            dir_fd = _open_dir(root_fd, parts[:-1], create=False)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ArchiveError(f"cannot remove {rel} from the image ({exc.strerror})") from exc
        finally:
            os.close(root_fd)
        try:
            st = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            os.close(dir_fd)
            continue
        try:
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(parts[-1], dir_fd=dir_fd)
            else:
                os.unlink(parts[-1], dir_fd=dir_fd)
        finally:
            os.close(dir_fd)


def apply_layout(root: Path, recipe: Recipe, layout: Layout) -> None:
    """Remove the recipe's install leftovers, lay ``layout``'s directories and files onto the
    rootfs at ``root``, and add the service account if missing.

    Raises:
        ArchiveError: a path of the layout meets a symlink or a file in the image.
    """
    remove_paths(root, recipe.build_remove)
    ensure_user(root, recipe.user, recipe.fallback_uid)
    for path in layout.dirs:
        make_dir(root, path)
    for f in layout.files:
        write_file(root, f.path, f.text.encode(), f.mode)
