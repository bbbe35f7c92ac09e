"""Reading image inputs safely: blob stores, verified and bounded streams, layer application.

Everything here reads attacker-supplied bytes. Stores hand out blobs by name without following
symlinks or extracting anything; :class:`Verified` hashes a blob as it streams; the
:class:`BoundedReader` enforces the size limits on the *uncompressed* stream (so a gzip bomb
stops at the limit) and bounds what ``tarfile`` may buffer for one header; :func:`apply_layer`
feeds members one by one to :class:`~sealpod.build._tarsafe.TreeWriter`.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import os
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

from sealpod.build._tarsafe import (
    CHUNK_SIZE,
    MAX_SYMLINK_HOPS,
    WHITEOUT_PREFIX,
    Limits,
    TreeWriter,
    member_parts,
)
from sealpod.errors import ArchiveError

TAR_BUFSIZE = 256 << 10
# tarfile reads a pax or GNU long-name header into memory in one piece; real ones are tiny.
HEADER_BUDGET_BYTES = 4 << 20
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

Compression = Literal["tar", "gzip", "zstd"]


class Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


class BoundedReader:
    """An uncompressed layer stream that enforces the byte limits and hashes what it yields.

    ``max_total_bytes`` counts every uncompressed byte of every layer (file data and tar
    headers), so a gzip bomb stops at the limit while streaming. Between members (the "header
    phase") at most ``HEADER_BUDGET_BYTES`` may be read, since tarfile buffers pax and GNU
    long-name headers whole. The SHA-256 of all bytes, tail included, is the layer's diff_id.
    """

    def __init__(self, raw: Readable, writer: TreeWriter) -> None:
        self._raw = raw
        self._writer = writer
        self._hash = hashlib.sha256()
        self._pos = 0
        self._mark = 0
        self._in_content = False

    def read(self, size: int = CHUNK_SIZE, /) -> bytes:
        """Raises: ArchiveError: a limit is crossed or the decompressor fails."""
        try:
            data = self._raw.read(size if size >= 0 else CHUNK_SIZE)
        except ArchiveError:
            raise
        except (OSError, EOFError, ValueError, zlib.error) as exc:  # gzip/zlib/zstd errors
            raise ArchiveError(f"cannot decompress layer: {exc}") from exc
        self._pos += len(data)
        self._writer.total_bytes += len(data)
        limit = self._writer.limits.max_total_bytes
        if self._writer.total_bytes > limit:
            raise ArchiveError(f"uncompressed image is larger than the {limit}-byte limit")
        if not self._in_content and self._pos - self._mark > HEADER_BUDGET_BYTES:
            raise ArchiveError(f"a tar header block is larger than {HEADER_BUDGET_BYTES} bytes")
        self._hash.update(data)
        return data

    def start_header(self) -> None:
        """Start counting the header budget from here."""
        self._mark = self._pos

    @contextmanager
    def content(self) -> Iterator[None]:
        """Member data is being read: only the total limit applies."""
        self._in_content = True
        try:
            yield
        finally:
            self._in_content = False
            self._mark = self._pos

    def drain(self) -> str:
        """Read to the end (the padding after the tar end marker counts for the diff_id).

        Returns the ``sha256:<hex>`` digest of every byte read.
        """
        with self.content():
            while self.read(CHUNK_SIZE):
                pass
        return "sha256:" + self._hash.hexdigest()

    # tarfile's file-object protocol; a layer stream only reads forward.
    def write(self, b: bytes, /) -> int:
        raise ArchiveError("layer streams are read-only")

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, /) -> int:
        raise ArchiveError("layer streams cannot seek")

    def close(self) -> None:
        return None


@contextmanager
def _wrap_os_errors(member: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise ArchiveError(f"member {member!r} cannot be written: {exc.strerror}") from exc


def apply_layer(writer: TreeWriter, stream: BoundedReader, label: str) -> None:
    """Apply one uncompressed layer tar stream to the writer's tree, member by member.

    Raises:
        ArchiveError: a hostile or malformed member (the message names it and the layer).
    """
    writer.begin_layer()
    try:
        with tarfile.open(fileobj=stream, mode="r|", bufsize=TAR_BUFSIZE) as tf:
            while True:
                stream.start_header()
                info = tf.next()
                if info is None:
                    break
                # Stream mode remembers every TarInfo; we never look back, so keep memory flat.
                tf.members.clear()  # type: ignore[attr-defined]
                writer.count_entry(info.name)
                with _wrap_os_errors(info.name):
                    _apply_member(writer, tf, info, stream)
    except ArchiveError as exc:
        raise ArchiveError(f"layer {label}: {exc.message}") from exc
    except (tarfile.TarError, EOFError, ValueError, UnicodeError) as exc:
        raise ArchiveError(f"layer {label} is not a valid tar stream: {exc}") from exc


def _apply_member(
    writer: TreeWriter, tf: tarfile.TarFile, info: tarfile.TarInfo, stream: BoundedReader
) -> None:
    name = info.name
    parts = member_parts(name)
    if info.isreg():
        if info.size > writer.limits.max_entry_bytes:
            raise ArchiveError(
                f"member {name!r} is {info.size} bytes, over the "
                f"{writer.limits.max_entry_bytes} limit"
            )
        data = tf.extractfile(info)
        if data is None:  # tarfile gives every regular member a stream; never trust it blindly
            raise ArchiveError(f"member {name!r} is a regular file without data")
        with data, stream.content():
            if parts and parts[-1].startswith(WHITEOUT_PREFIX):
                while data.read(CHUNK_SIZE):  # whiteout files carry no meaning in their data
                    pass
                writer.whiteout(name, parts)
            else:
                writer.add_file(name, parts, info.mode, data, info.size)
        return
    if parts and parts[-1].startswith(WHITEOUT_PREFIX):
        writer.whiteout(name, parts)
    elif info.isdir():
        writer.add_directory(name, parts, info.mode)
    elif info.issym():
        writer.add_symlink(name, parts, info.linkname)
    elif info.islnk():
        writer.add_hardlink(name, parts, info.linkname)
    elif info.ischr() or info.isblk():
        kind = "character" if info.ischr() else "block"
        raise ArchiveError(f"member {name!r} is a {kind} device node; device nodes are refused")
    elif info.isfifo():
        raise ArchiveError(f"member {name!r} is a fifo; fifos are refused")
    else:
        raise ArchiveError(f"member {name!r} has unsupported tar type {info.type!r}")


def copy_tree(source: Path, writer: TreeWriter) -> None:
    """Copy a rootfs directory into the writer's tree as one layer, never following symlinks.

    Hard links in the source become independent copies.

    Raises:
        ArchiveError: a device node, fifo or socket, an escaping symlink, or a limit crossed.
    """
    writer.begin_layer()
    root_fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        # Pending directories are kept as paths, not fds: a wide tree must not exhaust fds.
        todo: list[tuple[str, ...]] = [()]
        while todo:
            here = todo.pop()
            fd = _open_dir_under(root_fd, here)
            try:
                with os.scandir(fd) as it:
                    entries = sorted(it, key=lambda e: e.name)
                for entry in entries:
                    parts = (*here, entry.name)
                    name = "/".join(parts)
                    writer.count_entry(name)
                    st = entry.stat(follow_symlinks=False)
                    with _wrap_os_errors(name):
                        if stat.S_ISDIR(st.st_mode):
                            writer.add_directory(name, parts, st.st_mode)
                            todo.append(parts)
                        elif stat.S_ISREG(st.st_mode):
                            _copy_file(writer, fd, entry.name, parts)
                        elif stat.S_ISLNK(st.st_mode):
                            writer.add_symlink(name, parts, os.readlink(entry.name, dir_fd=fd))
                        else:
                            raise ArchiveError(f"{name!r} is a {_kind(st.st_mode)}; refused")
            finally:
                os.close(fd)
    finally:
        os.close(root_fd)


def _open_dir_under(root_fd: int, parts: tuple[str, ...]) -> int:
    fd = os.dup(root_fd)
    for comp in parts:
        try:
            nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)
        fd = nfd
    return fd


def _copy_file(writer: TreeWriter, dir_fd: int, leaf: str, parts: tuple[str, ...]) -> None:
    name = "/".join(parts)
    fd = os.open(leaf, _FILE_FLAGS, dir_fd=dir_fd)
    with open(fd, "rb", closefd=True) as src:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ArchiveError(f"{name!r} changed type while being copied")
        writer.total_bytes += st.st_size
        if writer.total_bytes > writer.limits.max_total_bytes:
            limit = writer.limits.max_total_bytes
            raise ArchiveError(f"{name!r}: rootfs is larger than the {limit}-byte limit")
        writer.add_file(name, parts, st.st_mode, src, st.st_size)


def _kind(mode: int) -> str:
    if stat.S_ISCHR(mode):
        return "character device node"
    if stat.S_ISBLK(mode):
        return "block device node"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    return f"special file (mode {mode:o})"


class Verified:
    """Reads a blob while hashing it, so its digest and size can be checked at the end."""

    def __init__(self, raw: BinaryIO, name: str, *, algorithm: str, size: int | None) -> None:
        self._raw = raw
        self._name = name
        self._hash = hashlib.new(algorithm)
        self._algorithm = algorithm
        self._size = size
        self.count = 0

    def read(self, n: int = -1, /) -> bytes:
        data = self._raw.read(n if n >= 0 else CHUNK_SIZE)
        self.count += len(data)
        if self._size is not None and self.count > self._size:
            raise ArchiveError(f"{self._name} is larger than the {self._size} bytes declared")
        self._hash.update(data)
        return data

    def seek(self, n: int, /) -> int:
        raise ArchiveError(f"{self._name}: blobs are read forward only")

    def finish(self) -> str:
        """Read any tail and return ``alg:hex`` of the whole blob."""
        while self.read(CHUNK_SIZE):
            pass
        return f"{self._algorithm}:{self._hash.hexdigest()}"


def decompressor(kind: Compression, raw: Verified, label: str, stack: ExitStack) -> Readable:
    if kind == "gzip":
        return stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
    if kind == "zstd":
        try:
            zstandard = importlib.import_module("zstandard")
        except ImportError as exc:
            raise ArchiveError(
                f"layer {label} is zstd-compressed; install the optional 'zstandard' package "
                "to read it (sealpod does not depend on it)"
            ) from exc
        return _ZstdReader(zstandard.ZstdDecompressor().stream_reader(raw), zstandard.ZstdError)
    return raw


class _ZstdReader:
    """Maps zstandard's own exception to OSError, which the layer stream wraps once."""

    def __init__(self, inner: BinaryIO, error: type[Exception]) -> None:
        self._inner = inner
        self._error = error

    def read(self, n: int = -1, /) -> bytes:
        try:
            return self._inner.read(n)
        except self._error as exc:
            raise OSError(f"zstd: {exc}") from exc


# --- where blobs come from: a directory or a (possibly gzipped) tar -----------------------------
class Store(Protocol):
    def open(self, name: str) -> BinaryIO: ...

    def exists(self, name: str) -> bool: ...


class DirStore:
    """Files of a layout directory, opened without following symlinks (a blob that is a link to
    ``/dev/zero`` or a fifo must not hang or feed the build)."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def open(self, name: str) -> BinaryIO:
        parts = member_parts(name, what="path")
        if not parts:
            raise ArchiveError(f"path {name!r} names the layout directory itself")
        fd = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for comp in parts[:-1]:
                nfd = os.open(comp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = nfd
            ffd = os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
        except FileNotFoundError as exc:
            raise ArchiveError(f"{name} is missing from the image") from exc
        except OSError as exc:
            raise ArchiveError(f"{name} cannot be opened (symlinks are refused): {exc}") from exc
        finally:
            os.close(fd)
        if not stat.S_ISREG(os.fstat(ffd).st_mode):
            os.close(ffd)
            raise ArchiveError(f"{name} is not a regular file")
        return os.fdopen(ffd, "rb")

    def exists(self, name: str) -> bool:
        try:
            self.open(name).close()
        except ArchiveError:
            return False
        return True


class TarStore:
    """Random access to the regular files of an outer archive, indexed once without extracting.

    Symlinks between members (old ``docker save`` links identical ``layer.tar`` files) are
    resolved inside the archive; duplicates, ``..``/absolute names and special files are refused.
    """

    def __init__(self, path: Path, members: dict[str, tarfile.TarInfo]) -> None:
        self._path = path
        self._members = members

    @classmethod
    def index(cls, path: Path, limits: Limits, stack: ExitStack) -> TarStore:
        """Index ``path`` (staging a gzip-compressed archive to a temporary file first).

        Raises:
            ArchiveError: not a tar, or a hostile member.
        """
        with open(path, "rb") as f:
            compressed = f.read(2) == GZIP_MAGIC
        if compressed:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sealpod-image-")))
            path = _gunzip(path, tmp / "image.tar", limits.max_total_bytes)
        members: dict[str, tarfile.TarInfo] = {}
        with open(path, "rb") as raw:
            try:
                with tarfile.open(fileobj=_HeaderGuard(raw), mode="r:") as tf:
                    count = 0
                    while (info := tf.next()) is not None:
                        count += 1
                        if count > limits.max_entries:
                            raise ArchiveError(
                                f"archive has more than {limits.max_entries} members"
                            )
                        key = "/".join(member_parts(info.name, what="archive member"))
                        if key in members:
                            raise ArchiveError(f"archive member {info.name!r} appears twice")
                        if info.isreg() and info.sparse is None:
                            members[key] = info
                        elif info.issym():
                            members[key] = info
                        elif not info.isdir():
                            raise ArchiveError(
                                f"archive member {info.name!r} has type {info.type!r}, "
                                "expected a file, directory or symlink"
                            )
            except (tarfile.TarError, EOFError, ValueError, UnicodeError) as exc:
                raise ArchiveError(f"{path.name} is not a valid tar archive: {exc}") from exc
        return cls(path, members)

    def _lookup(self, name: str) -> tarfile.TarInfo:
        key = "/".join(member_parts(name, what="path"))
        for _ in range(MAX_SYMLINK_HOPS):
            info = self._members.get(key)
            if info is None:
                raise ArchiveError(f"{name} is missing from the archive")
            if not info.issym():
                return info
            parts = [] if info.linkname.startswith("/") else key.split("/")[:-1]
            for comp in info.linkname.split("/"):
                if comp == "..":
                    if not parts:
                        raise ArchiveError(f"archive symlink {info.name!r} escapes the archive")
                    parts.pop()
                elif comp not in ("", "."):
                    parts.append(comp)
            key = "/".join(parts)
        raise ArchiveError(f"{name}: more than {MAX_SYMLINK_HOPS} symlinks in the archive")

    def open(self, name: str) -> BinaryIO:
        info = self._lookup(name)
        return io.BufferedReader(_Slice(self._path, info.offset_data, info.size), CHUNK_SIZE)

    def exists(self, name: str) -> bool:
        try:
            self._lookup(name)
        except ArchiveError:
            return False
        return True


class _HeaderGuard:
    """tarfile reads a pax/GNU long-name header in one ``read``; refuse absurd sizes up front."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw

    def read(self, size: int = -1, /) -> bytes:
        if size < 0 or size > HEADER_BUDGET_BYTES:
            raise ArchiveError(f"a tar header block is larger than {HEADER_BUDGET_BYTES} bytes")
        return self._raw.read(size)

    def write(self, b: bytes, /) -> int:
        raise ArchiveError("archives are opened read-only")

    def seek(self, pos: int, whence: int = 0, /) -> int:
        return self._raw.seek(pos, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        return None


class _Slice(io.RawIOBase):
    """One member's bytes, read with ``pread`` from its own descriptor."""

    def __init__(self, path: Path, start: int, size: int) -> None:
        super().__init__()
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._start = start
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        n = min(len(buf), self._size - self._pos)
        if n <= 0:
            return 0
        data = os.pread(self._fd, n, self._start + self._pos)
        if not data:
            raise ArchiveError("archive ends inside a member")
        buf[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


def _gunzip(src: Path, dest: Path, limit: int) -> Path:
    """Decompress an outer ``.tar.gz`` to ``dest``, stopping at ``limit`` bytes (gzip bombs)."""
    written = 0
    try:
        with gzip.open(src, "rb") as zin, open(dest, "wb") as out:
            while chunk := zin.read(CHUNK_SIZE):
                written += len(chunk)
                if written > limit:
                    raise ArchiveError(f"{src.name} decompresses to more than {limit} bytes")
                out.write(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise ArchiveError(f"{src.name} is not a valid gzip file: {exc}") from exc
    return dest
