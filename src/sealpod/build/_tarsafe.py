"""Safe, member-by-member application of image layers onto a root directory.

The host that builds a bundle extracts archives written by strangers, so nothing here trusts a
member name, a link target or a size field:

* every path is split into components; ``..`` and absolute names are refused outright;
* symlinks are never followed by the kernel while writing: each parent directory is opened with
  ``O_NOFOLLOW | O_DIRECTORY`` relative to its parent's fd, and when a component is a symlink we
  resolve it ourselves, inside the root, refusing any resolution that climbs above the root;
* leaves are created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` after removing whatever was there, so a
  later layer can never write *through* an earlier link;
* device nodes, fifos and unknown member types are refused, as are duplicates within a layer,
  entries over the size limits, and tar headers that would make ``tarfile`` buffer megabytes.

OCI whiteouts (image-spec ``layer.md``): ``.wh.<name>`` removes ``<name>`` from lower layers and
``.wh..wh..opq`` hides every lower-layer entry of its directory. A whiteout may only affect lower
layers, so a layer that both adds and whites out one path is refused as contradictory.

``tarfile`` reads the stream (:mod:`._image_io`) but does not write the tree: its extraction
filter ``filter="data"`` (measured on Python 3.11.7) refuses absolute symlinks, which images
are full of (``/etc/localtime``); ignores directory modes and clears the sticky and group/other
write bits, so ``/tmp`` would be ``0o755``; writes a later layer's file *through* a lower
layer's symlink instead of replacing it; and resolves absolute links against the host's ``/``,
not the image root. None of that is fixable from a filter callable: the last two are how
``tarfile`` writes (paths, not directory fds).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from dataclasses import dataclass
from typing import Literal, Protocol

from sealpod.errors import ArchiveError

MAX_SYMLINK_HOPS = 40  # the kernel's own limit (MAXSYMLINKS) for one path resolution
MAX_DEPTH = 256  # far beyond real images; keeps every walk (and shutil.rmtree) shallow
MAX_NAME_BYTES = 4095  # PATH_MAX - 1: a longer member name could not be used in the rootfs
CHUNK_SIZE = 1 << 20
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_AUFS_META_PREFIX = ".wh..wh."  # AUFS bookkeeping (.wh..wh.plnk ...): skipped like containerd
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# setuid/setgid are dropped: the tree is written on the build host, often as root, and a
# setuid-root binary from a stranger's image must not appear there (see docs/images.md).
KEPT_MODE_BITS = 0o1777

Parts = tuple[str, ...]


class _Source(Protocol):
    def read(self, size: int, /) -> bytes: ...


_Mode = Literal["create", "lookup"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Bounds on what one image may unpack to."""

    max_entries: int
    max_total_bytes: int
    max_entry_bytes: int


def member_parts(name: str, *, what: str = "member") -> Parts:
    """Split an archive path into components, dropping ``.`` and empty ones.

    Raises:
        ArchiveError: the name is absolute, has a ``..`` component, a NUL byte, or is too long.
    """
    if "\x00" in name:
        raise ArchiveError(f"{what} {name!r} contains a NUL byte")
    if name.startswith("/"):
        raise ArchiveError(f"{what} {name!r} is an absolute path, expected a relative one")
    if len(os.fsencode(name)) > MAX_NAME_BYTES:
        raise ArchiveError(f"{what} {name[:64]!r}... is longer than {MAX_NAME_BYTES} bytes")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise ArchiveError(f"{what} {name!r} has a '..' component, expected none")
    if len(parts) > MAX_DEPTH:
        raise ArchiveError(f"{what} {name[:64]!r}... is {len(parts)} levels deep, max {MAX_DEPTH}")
    return parts


class TreeWriter:
    """Writes entries under ``root`` without ever following a symlink; see the module docstring.

    Directories stay ``0o700`` while layers are applied (so a read-only directory from one layer
    cannot block the next) and get their recorded modes in :meth:`finish`.
    """

    def __init__(self, root_fd: int, limits: Limits) -> None:
        self._root_fd = root_fd
        self.limits = limits
        self.entries = 0
        self.total_bytes = 0  # bytes read from layer streams / source files, for max_total_bytes
        self._dir_modes: dict[Parts, int] = {(): 0o755}
        self._seen: set[Parts] = set()  # paths this layer mentioned (duplicate detection)
        self._added: set[Parts] = set()  # paths this layer added, with their ancestors

    # --- bookkeeping ---------------------------------------------------------------------------
    def begin_layer(self) -> None:
        """Start a new layer: duplicate detection and whiteout scope are per layer."""
        self._seen = set()
        self._added = set()

    def count_entry(self, member: str) -> None:
        """Raises: ArchiveError: more entries than ``max_entries``."""
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise ArchiveError(
                f"member {member!r}: image has more than {self.limits.max_entries} entries"
            )

    def _mention(self, member: str, canon: Parts) -> None:
        if canon in self._seen:
            raise ArchiveError(f"member {member!r} appears more than once in one layer")
        self._seen.add(canon)

    def _mark_added(self, canon: Parts) -> None:
        for i in range(len(canon), -1, -1):
            if canon[:i] in self._added:
                break
            self._added.add(canon[:i])

    # --- resolution ----------------------------------------------------------------------------
    def _walk_existing(self, parts: Parts, member: str, *, mode: _Mode) -> tuple[Parts, int]:
        """:meth:`walk` where the directory must resolve: create mode, or a lookup of a
        directory the caller has just listed.

        Raises:
            ArchiveError: as :meth:`walk`, or the directory is not there after all (it changed
                under us).
        """
        got = self.walk(parts, member, mode=mode)
        if got is None:
            raise ArchiveError(f"{member!r} is not a directory inside the image root any more")
        return got

    def walk(self, parts: Parts, member: str, *, mode: _Mode) -> tuple[Parts, int] | None:
        """Resolve ``parts`` to a directory inside the root, following symlinks ourselves.

        Returns the canonical (symlink-free) path and an open fd the caller must close, or None
        when ``mode="lookup"`` and a component is missing or not a directory. ``mode="create"``
        makes missing directories (mode 0o755, as ``tar`` and container runtimes do).

        Raises:
            ArchiveError: the resolution climbs above the root, loops, goes too deep, or (create)
                meets a non-directory.
        """
        stack = [os.dup(self._root_fd)]  # fds of the canonical directories; [-1] is current
        canon: list[str] = []
        pending = list(reversed(parts))
        hops = 0
        try:
            while pending:
                comp = pending.pop()
                if comp in ("", "."):
                    continue
                if comp == "..":
                    if not canon:
                        raise ArchiveError(f"{member!r} resolves to a path outside the image root")
                    canon.pop()
                    os.close(stack.pop())
                    continue
                try:
                    fd = os.open(comp, _DIR_FLAGS, dir_fd=stack[-1])
                except FileNotFoundError:
                    if mode != "create":
                        _lexical_rest(pending, len(canon), member)
                        return None
                    os.mkdir(comp, 0o700, dir_fd=stack[-1])
                    self._dir_modes[(*canon, comp)] = 0o755
                    fd = os.open(comp, _DIR_FLAGS, dir_fd=stack[-1])
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    st = os.stat(comp, dir_fd=stack[-1], follow_symlinks=False)
                    if not stat.S_ISLNK(st.st_mode):
                        if mode == "create":
                            where = "/".join((*canon, comp))
                            raise ArchiveError(f"{member!r}: {where} is not a directory") from exc
                        _lexical_rest(pending, len(canon), member)
                        return None
                    hops += 1
                    if hops > MAX_SYMLINK_HOPS:
                        raise ArchiveError(
                            f"{member!r}: more than {MAX_SYMLINK_HOPS} symlinks"
                        ) from exc
                    target = os.readlink(comp, dir_fd=stack[-1])
                    if target.startswith("/"):  # absolute means the image root, never the host's
                        for extra in stack[1:]:
                            os.close(extra)
                        del stack[1:]
                        canon.clear()
                    pending.extend(reversed(target.split("/")))
                    continue
                stack.append(fd)
                canon.append(comp)
                if len(canon) > MAX_DEPTH:
                    raise ArchiveError(f"{member!r} resolves deeper than {MAX_DEPTH} levels")
            return tuple(canon), stack.pop()
        finally:
            for fd in stack:
                os.close(fd)

    def _enter(self, member: str, parts: Parts) -> tuple[Parts, int]:
        got = self._walk_existing(parts[:-1], member, mode="create")
        canon = (*got[0], parts[-1])
        try:
            self._mention(member, canon)
        except ArchiveError:
            os.close(got[1])
            raise
        self._mark_added(canon)
        return canon, got[1]

    # --- entries -------------------------------------------------------------------------------
    def add_directory(self, member: str, parts: Parts, mode: int) -> None:
        """Create (or keep) a directory; its mode is applied in :meth:`finish`."""
        if not parts:
            return  # the root entry ("./"): the root's own mode is ours to choose
        canon, pfd = self._enter(member, parts)
        try:
            if not _clear_leaf(pfd, parts[-1], keep_dir=True):
                os.mkdir(parts[-1], 0o700, dir_fd=pfd)
            self._dir_modes[canon] = mode & KEPT_MODE_BITS
        finally:
            os.close(pfd)

    def add_file(self, member: str, parts: Parts, mode: int, src: _Source, size: int) -> None:
        """Write a regular file of exactly ``size`` bytes read from ``src``.

        Raises:
            ArchiveError: the entry is over ``max_entry_bytes`` or the data is short or long.
        """
        if size > self.limits.max_entry_bytes:
            raise ArchiveError(
                f"member {member!r} is {size} bytes, over the {self.limits.max_entry_bytes} limit"
            )
        if not parts:
            raise ArchiveError(f"member {member!r} is a file at the image root")
        _, pfd = self._enter(member, parts)
        try:
            _clear_leaf(pfd, parts[-1], keep_dir=False)
            fd = os.open(parts[-1], _NEW_FILE_FLAGS, 0o600, dir_fd=pfd)
        finally:
            os.close(pfd)
        with open(fd, "wb", closefd=True) as out:
            copied = 0
            while chunk := src.read(CHUNK_SIZE):
                copied += len(chunk)
                if copied > size:
                    raise ArchiveError(f"member {member!r} has more data than its size {size}")
                out.write(chunk)
            if copied != size:
                raise ArchiveError(f"member {member!r} has {copied} bytes, expected {size}")
            os.fchmod(fd, mode & KEPT_MODE_BITS)

    def add_symlink(self, member: str, parts: Parts, target: str) -> None:
        """Create a symlink; a target that climbs above the root is refused.

        Absolute targets are kept: inside the image they mean the image root. :meth:`finish`
        re-checks every link physically, through the links it passes.
        """
        if not target or "\x00" in target:
            raise ArchiveError(f"symlink {member!r} has an empty or NUL-containing target")
        if not parts:
            raise ArchiveError(f"symlink {member!r} replaces the image root")
        canon, pfd = self._enter(member, parts)
        try:
            base = () if target.startswith("/") else canon[:-1]
            _lexical_rest(list(reversed(target.split("/"))), len(base), member)
            _clear_leaf(pfd, parts[-1], keep_dir=False)
            os.symlink(target, parts[-1], dir_fd=pfd)
        finally:
            os.close(pfd)

    def add_hardlink(self, member: str, parts: Parts, target: str) -> None:
        """Hard-link ``member`` to an existing non-directory ``target`` inside the root.

        Raises:
            ArchiveError: the target escapes the root, is missing, is a directory or is itself.
        """
        tparts = member_parts(target, what=f"hardlink {member!r} target")
        if not tparts or not parts:
            raise ArchiveError(f"hardlink {member!r} -> {target!r} involves the image root")
        found = self.walk(tparts[:-1], member, mode="lookup")
        if found is None:
            raise ArchiveError(f"hardlink {member!r} -> {target!r}: target is missing")
        tcanon, tfd = found
        try:
            try:
                st = os.stat(tparts[-1], dir_fd=tfd, follow_symlinks=False)
            except FileNotFoundError as exc:
                raise ArchiveError(f"hardlink {member!r} -> {target!r}: target is missing") from exc
            if stat.S_ISDIR(st.st_mode):
                raise ArchiveError(f"hardlink {member!r} -> {target!r}: target is a directory")
            canon, pfd = self._enter(member, parts)
            try:
                if canon == (*tcanon, tparts[-1]):
                    raise ArchiveError(f"hardlink {member!r} points to itself")
                _clear_leaf(pfd, parts[-1], keep_dir=False)
                os.link(
                    tparts[-1], parts[-1], src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False
                )
            finally:
                os.close(pfd)
        finally:
            os.close(tfd)

    def whiteout(self, member: str, parts: Parts) -> None:
        """Apply a ``.wh.`` member: delete from lower layers, or make a directory opaque.

        Raises:
            ArchiveError: the whiteout names nothing, or targets a path this layer adds.
        """
        leaf = parts[-1]
        if leaf == OPAQUE_MARKER:
            self._opaque(member, parts[:-1])
            return
        if leaf.startswith(_AUFS_META_PREFIX):
            return
        name = leaf[len(WHITEOUT_PREFIX) :]
        if name in ("", ".", ".."):
            raise ArchiveError(f"whiteout {member!r} names no entry")
        found = self.walk(parts[:-1], member, mode="lookup")
        if found is None:
            return  # nothing below to hide
        canon = (*found[0], name)
        try:
            if canon in self._added:
                raise ArchiveError(f"whiteout {member!r} removes an entry its own layer adds")
            self._mention(member, canon)
            _clear_leaf(found[1], name, keep_dir=False)
        finally:
            os.close(found[1])

    def _opaque(self, member: str, dir_parts: Parts) -> None:
        got = self._walk_existing(dir_parts, member, mode="create")
        canon, dfd = got
        self._mention(member, (*canon, OPAQUE_MARKER))
        self._mark_added(canon)
        # Drop every lower-layer entry below the directory; keep (and descend into) what this
        # layer already added, wherever the marker sits in the tar stream.
        todo = [(canon, dfd)]
        while todo:
            here, fd = todo.pop()
            try:
                for entry in _list_dir(fd):
                    path = (*here, entry.name)
                    if path not in self._added:
                        _clear_leaf(fd, entry.name, keep_dir=False)
                    elif entry.is_dir(follow_symlinks=False):
                        todo.append((path, os.open(entry.name, _DIR_FLAGS, dir_fd=fd)))
            finally:
                os.close(fd)

    # --- end -----------------------------------------------------------------------------------
    def finish(self) -> tuple[int, int]:
        """Check every symlink physically, apply directory modes, and count the tree.

        Returns ``(file_count, total_file_bytes)`` over regular files.

        Raises:
            ArchiveError: a symlink resolves (through other links) above the root.
        """
        files = size = 0
        dirs: list[Parts] = []  # preorder: every parent before its descendants
        todo: list[Parts] = [()]
        while todo:
            here = todo.pop()
            dirs.append(here)
            fd = self._open_real_dir(here)
            try:
                for entry in _list_dir(fd):
                    path = (*here, entry.name)
                    st = entry.stat(follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode):
                        todo.append(path)
                    elif stat.S_ISREG(st.st_mode):
                        files += 1
                        size += st.st_size
                    elif stat.S_ISLNK(st.st_mode):
                        self._check_link(path, os.readlink(entry.name, dir_fd=fd))
            finally:
                os.close(fd)
        # Descendants before parents, so a read-only parent never blocks a child's chmod.
        for path in reversed(dirs):
            fd = self._open_real_dir(path)
            try:
                os.fchmod(fd, self._dir_modes.get(path, 0o755))
            finally:
                os.close(fd)
        return files, size

    def _open_real_dir(self, path: Parts) -> int:
        return self._walk_existing(path, "/".join(path) or ".", mode="lookup")[1]

    def _check_link(self, path: Parts, target: str) -> None:
        name = "/".join(path)
        base: Parts = () if target.startswith("/") else path[:-1]
        try:
            found = self.walk((*base, *target.split("/")), f"symlink {name}", mode="lookup")
        except ArchiveError as exc:
            raise ArchiveError(f"symlink {name!r} -> {target!r} is refused: {exc.message}") from exc
        if found is not None:
            os.close(found[1])


def _lexical_rest(pending: list[str], depth: int, member: str) -> None:
    """Consume path components (a reversed stack) lexically; refuse climbing above depth 0."""
    while pending:
        comp = pending.pop()
        if comp == "..":
            depth -= 1
            if depth < 0:
                raise ArchiveError(f"{member!r} resolves to a path outside the image root")
        elif comp not in ("", "."):
            depth += 1


def _clear_leaf(parent_fd: int, name: str, *, keep_dir: bool) -> bool:
    """Remove whatever sits at ``name`` (never following it). True if a directory was kept."""
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        if keep_dir:
            return True
        shutil.rmtree(name, dir_fd=parent_fd)  # fd-based: safe against symlink tricks
    else:
        os.unlink(name, dir_fd=parent_fd)
    return False


def _list_dir(fd: int) -> list[os.DirEntry[str]]:
    with os.scandir(fd) as it:
        return list(it)
