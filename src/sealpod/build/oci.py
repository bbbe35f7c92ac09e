"""Write a sealed bundle as an OCI image layout: :func:`write_oci_layout`.

The layout (image-spec ``image-layout.md``) holds one image: an index, a manifest carrying the
caller's annotations (``org.sealpod.measurement``, ``org.sealpod.signer``), a config, and the
whole bundle directory as a single layer. The layer is a deterministic tar — entries sorted by
path, mtime 0, uid/gid 0, no user or group names, PAX headers only where a name or size needs
one — so the same bundle always gives the same layer digest and manifest digest, whatever the
file times and owners on the machine that packed it. Registries and ``skopeo``/``podman`` can
carry the result; :func:`sealpod.build.image.materialize_image` reads it back.

The layer is uncompressed by default: gzip output depends on the zlib build, and a digest that
changes between machines would defeat the point of a reproducible bundle.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sealpod._files import create_new, open_dir, open_subdir, write_new
from sealpod.build._outdir import discard_output, prepare_empty_dir
from sealpod.errors import BundleError, ConfigError

LAYOUT_VERSION = "1.0.0"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP_TYPE = LAYER_TYPE + "+gzip"
# Bundles target x86 TEEs (SGX, SEV-SNP, TDX); the platform lets multi-arch tools pick it.
PLATFORM = {"architecture": "amd64", "os": "linux"}
CHUNK_SIZE = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class Blob:
    """A content-addressed blob written under ``blobs/sha256/``."""

    digest: str
    size: int

    def descriptor(self, media_type: str) -> dict[str, object]:
        return {"mediaType": media_type, "digest": self.digest, "size": self.size}


def write_oci_layout(
    bundle_dir: Path,
    out_dir: Path,
    *,
    annotations: dict[str, str],
    gzip_layer: bool = False,
) -> str:
    """Write ``bundle_dir`` as a one-image OCI layout in ``out_dir``; return the manifest digest.

    ``out_dir`` must not exist or be empty. ``annotations`` go on the manifest and, as labels, in
    the image config (so ``docker inspect`` shows them too).

    Raises:
        ConfigError: ``out_dir`` is not an empty directory, or an annotation is not a non-empty
            string key with a string value.
        BundleError: ``bundle_dir`` is not a directory or holds a device node, fifo or socket.
    """
    for key, value in annotations.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise ConfigError(f"annotation {key!r} must be a non-empty string with a string value")
    if not bundle_dir.is_dir():
        raise BundleError(f"bundle {bundle_dir} is not a directory")
    created = prepare_empty_dir(out_dir, "OCI output")
    try:
        return _write_all(bundle_dir, out_dir, annotations, gzip_layer=gzip_layer)
    except BaseException as exc:
        discard_output(out_dir, created)
        if isinstance(exc, OSError):
            raise BundleError(f"cannot write the OCI layout of {bundle_dir}: {exc}") from exc
        raise


def _write_all(
    bundle_dir: Path, out_dir: Path, annotations: dict[str, str], *, gzip_layer: bool
) -> str:
    blobs = out_dir / "blobs" / "sha256"
    out_fd = open_dir(out_dir)
    try:  # a symlink planted in the (just checked) output directory is refused
        blobs_fd = open_subdir(out_fd, "blobs", create=True, mode=0o755)
        os.close(open_subdir(blobs_fd, "sha256", create=True, mode=0o755))
        os.close(blobs_fd)
    finally:
        os.close(out_fd)
    layer, diff_id = _write_layer(bundle_dir, blobs, gzip_layer=gzip_layer)
    config = _put_json(
        blobs,
        {
            **PLATFORM,
            "config": {"Labels": dict(annotations)},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        },
    )
    manifest = _put_json(
        blobs,
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": config.descriptor(CONFIG_TYPE),
            "layers": [layer.descriptor(LAYER_GZIP_TYPE if gzip_layer else LAYER_TYPE)],
            "annotations": dict(annotations),
        },
    )
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [{**manifest.descriptor(MANIFEST_TYPE), "platform": PLATFORM}],
    }
    # Created exclusively, never through a symlink someone planted in the output directory.
    write_new(out_dir / "index.json", _json(index), mode=0o644)
    write_new(out_dir / "oci-layout", _json({"imageLayoutVersion": LAYOUT_VERSION}), mode=0o644)
    return manifest.digest


def _json(obj: object) -> bytes:
    # Sorted keys and no whitespace: the bytes, and so the digests, depend only on the content.
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def put_json(blobs: Path, obj: object) -> Blob:
    """Write ``obj`` as canonical JSON into ``blobs`` (named by its sha256); return the blob."""
    return _put_json(blobs, obj)


def _put_json(blobs: Path, obj: object) -> Blob:
    data = _json(obj)
    digest = hashlib.sha256(data).hexdigest()
    write_new(blobs / digest, data, mode=0o644)
    return Blob(f"sha256:{digest}", len(data))


class _Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...

    def flush(self) -> None: ...


class _HashingWriter:
    """Counts and hashes what passes through to ``sink``."""

    def __init__(self, sink: _Sink) -> None:
        self._sink = sink
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes, /) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self._sink.write(data)

    def flush(self) -> None:
        self._sink.flush()

    def blob(self) -> Blob:
        return Blob(f"sha256:{self.hash.hexdigest()}", self.size)

    # tarfile's file-object protocol: writing only, forward only.
    def read(self, size: int = -1, /) -> bytes:
        raise BundleError("layer writer is write-only")

    def tell(self) -> int:
        return self.size

    def seek(self, pos: int, /) -> int:
        raise BundleError("layer writer cannot seek")

    def close(self) -> None:
        return None


def write_layer(
    tree: Path, blobs: Path, *, prefix: str = "", gzip_layer: bool = False
) -> tuple[Blob, str]:
    """Write ``tree`` as a deterministic layer blob into ``blobs``, its entries under
    ``prefix`` (one path component, e.g. ``"bundle"``, or none); return the blob and its
    diff_id (the digest of the uncompressed tar).

    Raises:
        BundleError: an entry is not a file, directory or symlink.
        OSError: the tree cannot be read or the blob written.
    """
    return _write_layer(tree, blobs, gzip_layer=gzip_layer, prefix=prefix)


def _write_layer(
    bundle_dir: Path, blobs: Path, *, gzip_layer: bool, prefix: str = ""
) -> tuple[Blob, str]:
    """Write the layer blob; return it and its diff_id (digest of the uncompressed tar)."""
    tmp = blobs / ".layer.partial"
    blobs_fd = open_dir(blobs)
    try:
        fd = create_new(blobs_fd, tmp.name, mode=0o644)
    finally:
        os.close(blobs_fd)
    with open(fd, "wb") as out:
        stored = _HashingWriter(out)
        if gzip_layer:
            # filename="" and mtime=0 keep the gzip header free of names and times.
            with gzip.GzipFile(filename="", mode="wb", fileobj=stored, mtime=0) as gz:
                plain = _HashingWriter(gz)
                _write_tar(bundle_dir, plain, prefix)
        else:
            plain = stored
            _write_tar(bundle_dir, plain, prefix)
    blob = stored.blob()
    tmp.rename(blobs / blob.digest.split(":")[1])
    return blob, plain.blob().digest


def _write_tar(bundle_dir: Path, sink: _HashingWriter, prefix: str = "") -> None:
    if "/" in prefix or prefix in (".", ".."):
        raise BundleError(f"layer prefix is {prefix!r}, expected one path component")
    root_fd = os.open(bundle_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tf:
            if prefix:
                top = tarfile.TarInfo(prefix)
                top.type, top.mode, top.mtime = tarfile.DIRTYPE, 0o755, 0
                top.uid = top.gid = 0
                top.uname = top.gname = ""
                tf.addfile(top)
            for parts in _sorted_entries(root_fd):
                _add_entry(tf, root_fd, parts, prefix)
    finally:
        os.close(root_fd)


def _sorted_entries(root_fd: int) -> list[tuple[str, ...]]:
    """Every path under the root, sorted component-wise (parents before their children)."""
    found: list[tuple[str, ...]] = []
    todo: list[tuple[str, ...]] = [()]
    while todo:
        here = todo.pop()
        fd = _open_dir(root_fd, here)
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    path = (*here, entry.name)
                    found.append(path)
                    if entry.is_dir(follow_symlinks=False):
                        todo.append(path)
        finally:
            os.close(fd)
    # Sort on encoded bytes: the same order on every machine, whatever the locale.
    found.sort(key=lambda p: tuple(os.fsencode(c) for c in p))
    return found


def _open_dir(root_fd: int, parts: tuple[str, ...]) -> int:
    fd = os.dup(root_fd)
    for comp in parts:
        try:
            nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)
        fd = nfd
    return fd


def _add_entry(tf: tarfile.TarFile, root_fd: int, parts: tuple[str, ...], prefix: str) -> None:
    name = "/".join((prefix, *parts) if prefix else parts)
    parent = _open_dir(root_fd, parts[:-1])
    try:
        st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        info = tarfile.TarInfo(name)
        info.mode = stat.S_IMODE(st.st_mode)
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
            tf.addfile(info)
        elif stat.S_ISLNK(st.st_mode):
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(parts[-1], dir_fd=parent)
            tf.addfile(info)
        elif stat.S_ISREG(st.st_mode):
            # Hard links become separate regular files: the tar then does not depend on inodes.
            fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=parent)
            with open(fd, "rb", closefd=True) as src:
                info.size = os.fstat(fd).st_size
                tf.addfile(info, src)
        else:
            raise BundleError(f"bundle entry {name!r} is not a file, directory or symlink")
    finally:
        os.close(parent)
