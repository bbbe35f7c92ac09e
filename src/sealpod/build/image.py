"""Turn an input image into a plain rootfs directory: :func:`materialize_image`.

Accepted inputs (detected, never guessed from the file name):

* a rootfs directory — copied, keeping modes and symlinks;
* a ``docker save`` / ``podman save`` archive — ``manifest.json`` with Config/Layers/RepoTags,
  layers plain or gzip; each layer's uncompressed SHA-256 must equal the config's diff_ids;
* an OCI image layout (image-spec ``image-layout.md``), as a directory or a tar — ``oci-layout``,
  ``index.json`` and ``blobs/<alg>/<hex>``; every blob is checked against its descriptor's digest
  and size, and a multi-platform index is narrowed to ``platform`` (default linux/amd64).

Archives (gzip-compressed too) are read in place with random access; nothing is extracted except
layer contents, which go through :mod:`sealpod.build._tarsafe`. Digests are checked while
streaming, so a mismatch is found after a layer is written: any failure removes the output.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from sealpod.build._image_io import (
    GZIP_MAGIC,
    ZSTD_MAGIC,
    BoundedReader,
    Compression,
    DirStore,
    Store,
    TarStore,
    Verified,
    apply_layer,
    copy_tree,
    decompressor,
)
from sealpod.build._outdir import discard_output, prepare_empty_dir
from sealpod.build._tarsafe import Limits, TreeWriter
from sealpod.errors import ArchiveError, ConfigError

GiB = 1 << 30
MAX_JSON_BYTES = 4 << 20  # manifests, indexes and configs are kilobytes; bound what we parse
MAX_INDEX_DEPTH = 4  # index.json -> image index -> manifest is the deepest real layout
_DIGEST = re.compile(r"(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})")
_INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
_MANIFEST_TYPES = {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
}
_CONFIG_TYPES = {
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
}

ImageFormat = Literal["rootfs-dir", "docker-archive", "oci-layout", "oci-archive"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageInfo:
    """What :func:`materialize_image` found; the process fields let a spec default to them."""

    format: ImageFormat
    layer_digests: tuple[str, ...]  # digests of the layer blobs as stored (compressed or not)
    diff_ids: tuple[str, ...]  # SHA-256 of each uncompressed layer tar
    repo_tags: tuple[str, ...]
    platform: str | None  # "os/architecture" from the image config
    entrypoint: tuple[str, ...] | None
    cmd: tuple[str, ...] | None
    env: tuple[str, ...]
    working_dir: str | None
    user: str | None
    file_count: int  # regular files in the result
    total_bytes: int  # their total size


# --- JSON models (foreign formats: unknown keys are ignored, the keys we use are strict) -------
class _Foreign(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")


class _Platform(_Foreign):
    architecture: str
    os: str


class _Descriptor(_Foreign):
    media_type: str = Field(alias="mediaType")
    digest: str = Field(pattern=_DIGEST.pattern)
    size: int = Field(ge=0)
    platform: _Platform | None = None


class _Layout(_Foreign):
    version: str = Field(alias="imageLayoutVersion")


class _Index(_Foreign):
    manifests: list[_Descriptor]


class _Manifest(_Foreign):
    config: _Descriptor
    layers: list[_Descriptor]


class _DockerEntry(_Foreign):
    config: str = Field(alias="Config")
    repo_tags: list[str] | None = Field(default=None, alias="RepoTags")
    layers: list[str] = Field(alias="Layers")


class _Process(_Foreign):
    entrypoint: list[str] | None = Field(default=None, alias="Entrypoint")
    cmd: list[str] | None = Field(default=None, alias="Cmd")
    env: list[str] | None = Field(default=None, alias="Env")
    working_dir: str | None = Field(default=None, alias="WorkingDir")
    user: str | None = Field(default=None, alias="User")


class _RootFs(_Foreign):
    diff_ids: list[str]


class _Config(_Foreign):
    architecture: str | None = None
    os: str | None = None
    config: _Process | None = None
    rootfs: _RootFs


_M = TypeVar("_M")
_DOCKER_MANIFEST = TypeAdapter(list[_DockerEntry])


# --- public entry point ------------------------------------------------------------------------
def materialize_image(
    source: Path,
    dest: Path,
    *,
    max_entries: int = 1_000_000,
    max_total_bytes: int = 64 * GiB,
    max_entry_bytes: int = 16 * GiB,
    platform: str = "linux/amd64",
) -> ImageInfo:
    """Unpack a rootfs directory, docker-save archive or OCI layout into the rootfs ``dest``.

    ``dest`` must not exist or be an empty directory. On any failure it is removed (or emptied).

    Raises:
        ConfigError: ``source`` is missing or not a file/directory, or ``dest`` is not empty.
        ArchiveError: the image is malformed, hostile, over a limit, or fails a digest check.
    """
    limits = Limits(
        max_entries=max_entries, max_total_bytes=max_total_bytes, max_entry_bytes=max_entry_bytes
    )
    try:
        st = os.stat(source)
    except OSError as exc:
        raise ConfigError(f"image source {source} cannot be read: {exc.strerror}") from exc
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        raise ConfigError(f"image source {source} is not a file or directory")
    created = _prepare_dest(Path(source), Path(dest))
    root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        writer = TreeWriter(root_fd, limits)
        with ExitStack() as stack:
            if stat.S_ISDIR(st.st_mode):
                dstore = DirStore(Path(source))
                if dstore.exists("oci-layout") and dstore.exists("index.json"):
                    fields = _read_oci(dstore, writer, platform, "oci-layout")
                else:
                    copy_tree(Path(source), writer)
                    fields = _Fields(format="rootfs-dir")
            else:
                tstore = TarStore.index(Path(source), limits, stack)
                if tstore.exists("oci-layout") and tstore.exists("index.json"):
                    fields = _read_oci(tstore, writer, platform, "oci-archive")
                elif tstore.exists("manifest.json"):
                    fields = _read_docker(tstore, writer)
                else:
                    raise ArchiveError(
                        f"{source} holds neither manifest.json (docker save) "
                        "nor oci-layout + index.json (OCI layout)"
                    )
        file_count, total = writer.finish()
    except BaseException:
        discard_output(Path(dest), created)
        raise
    finally:
        os.close(root_fd)
    return fields.info(file_count=file_count, total_bytes=total)


@dataclass(slots=True, kw_only=True)
class _Fields:
    format: ImageFormat
    layer_digests: list[str] = field(default_factory=list)
    diff_ids: tuple[str, ...] = ()
    repo_tags: tuple[str, ...] = ()
    config: _Config | None = None

    def info(self, *, file_count: int, total_bytes: int) -> ImageInfo:
        cfg = self.config
        proc = cfg.config if cfg is not None and cfg.config is not None else _Process()
        plat = f"{cfg.os}/{cfg.architecture}" if cfg is not None and cfg.os else None
        return ImageInfo(
            format=self.format,
            layer_digests=tuple(self.layer_digests),
            diff_ids=self.diff_ids,
            repo_tags=self.repo_tags,
            platform=plat,
            entrypoint=None if proc.entrypoint is None else tuple(proc.entrypoint),
            cmd=None if proc.cmd is None else tuple(proc.cmd),
            env=tuple(proc.env or ()),
            working_dir=proc.working_dir or None,
            user=proc.user or None,
            file_count=file_count,
            total_bytes=total_bytes,
        )


def _prepare_dest(source: Path, dest: Path) -> bool:
    """Make sure ``dest`` is a fresh empty directory; True when we created it."""
    src, dst = source.resolve(), dest.resolve()
    if dst == src or src in dst.parents:
        raise ConfigError(f"output {dest} lies inside the image source {source}")
    return prepare_empty_dir(dest, "output")


# --- docker save -------------------------------------------------------------------------------
def _read_docker(store: Store, writer: TreeWriter) -> _Fields:
    entries = _read_json(store, "manifest.json", _DOCKER_MANIFEST, "docker manifest")
    if len(entries) != 1:
        raise ArchiveError(f"manifest.json lists {len(entries)} images, expected exactly 1")
    entry = entries[0]
    config = _read_json(
        store, entry.config, _config_adapter(), "image config", digest=_digest_in_name(entry.config)
    )
    fields = _Fields(format="docker-archive", config=config, repo_tags=tuple(entry.repo_tags or ()))
    fields.diff_ids = _check_diff_ids(config, len(entry.layers))
    for name, diff_id in zip(entry.layers, fields.diff_ids, strict=True):
        fields.layer_digests.append(
            _apply_blob(store, writer, name, diff_id=diff_id, digest=_digest_in_name(name))
        )
    return fields


def _digest_in_name(name: str) -> str | None:
    """Docker names configs ``<hex>.json`` and (since 25) blobs ``blobs/sha256/<hex>``."""
    m = re.fullmatch(r"(?:blobs/sha256/)?([0-9a-f]{64})(?:\.json)?", name)
    return f"sha256:{m.group(1)}" if m else None


# --- OCI layout --------------------------------------------------------------------------------
def _read_oci(store: Store, writer: TreeWriter, platform: str, fmt: ImageFormat) -> _Fields:
    layout = _read_json(store, "oci-layout", TypeAdapter(_Layout), "oci-layout")
    if layout.version != "1.0.0":
        raise ArchiveError(f"oci-layout imageLayoutVersion is {layout.version!r}, expected '1.0.0'")
    index = _read_json(store, "index.json", TypeAdapter(_Index), "image index")
    desc = _select(index.manifests, platform, "index.json")
    for _ in range(MAX_INDEX_DEPTH):
        if desc.media_type not in _INDEX_TYPES:
            break
        nested = _read_blob_json(store, desc, TypeAdapter(_Index), "image index")
        desc = _select(nested.manifests, platform, desc.digest)
    if desc.media_type not in _MANIFEST_TYPES:
        raise ArchiveError(
            f"descriptor {desc.digest} has media type {desc.media_type!r}, expected an image "
            f"manifest (nested at most {MAX_INDEX_DEPTH} indexes deep)"
        )
    manifest = _read_blob_json(store, desc, TypeAdapter(_Manifest), "image manifest")
    if manifest.config.media_type not in _CONFIG_TYPES:
        raise ArchiveError(
            f"manifest {desc.digest} config has media type {manifest.config.media_type!r}, "
            "expected an image config"
        )
    config = _read_blob_json(store, manifest.config, _config_adapter(), "image config")
    fields = _Fields(format=fmt, config=config)
    fields.diff_ids = _check_diff_ids(config, len(manifest.layers))
    for layer, diff_id in zip(manifest.layers, fields.diff_ids, strict=True):
        declared = _declared_compression(layer.media_type, layer.digest)
        fields.layer_digests.append(
            _apply_blob(
                store,
                writer,
                _blob_path(layer.digest),
                diff_id=diff_id,
                digest=layer.digest,
                size=layer.size,
                declared=declared,
            )
        )
    return fields


def _select(descs: list[_Descriptor], platform: str, where: str) -> _Descriptor:
    """The descriptor for ``platform``; a lone descriptor without a platform also qualifies."""
    want_os, _, want_arch = platform.partition("/")
    hits = [
        d
        for d in descs
        if d.platform and (d.platform.os, d.platform.architecture) == (want_os, want_arch)
    ]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise ArchiveError(f"{where} lists {len(hits)} manifests for {platform}, expected one")
    if len(descs) == 1 and descs[0].platform is None:
        return descs[0]
    offered = sorted({f"{d.platform.os}/{d.platform.architecture}" for d in descs if d.platform})
    raise ArchiveError(f"{where} has no manifest for {platform} (offers: {offered or 'none'})")


def _blob_path(digest: str) -> str:
    alg, _, hexpart = digest.partition(":")
    return f"blobs/{alg}/{hexpart}"


def _declared_compression(media_type: str, digest: str) -> Compression:
    if "layer" not in media_type and "rootfs" not in media_type:
        raise ArchiveError(f"layer {digest} has media type {media_type!r}, expected a layer type")
    for suffix, kind in (("tar", "tar"), ("+gzip", "gzip"), (".gzip", "gzip"), ("+zstd", "zstd")):
        if media_type.endswith(suffix):
            return kind  # type: ignore[return-value]
    raise ArchiveError(f"layer {digest} has unsupported media type {media_type!r}")


def _config_adapter() -> TypeAdapter[_Config]:
    return TypeAdapter(_Config)


def _check_diff_ids(config: _Config, n_layers: int) -> tuple[str, ...]:
    ids = tuple(config.rootfs.diff_ids)
    if len(ids) != n_layers:
        raise ArchiveError(f"image config lists {len(ids)} diff_ids for {n_layers} layers")
    for d in ids:
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", d):  # what every image tool writes
            raise ArchiveError(f"image config diff_id {d!r} is not a sha256 digest")
    return ids


# --- reading blobs -----------------------------------------------------------------------------
def _read_json(
    store: Store,
    name: str,
    adapter: TypeAdapter[_M],
    what: str,
    *,
    digest: str | None = None,
    size: int | None = None,
) -> _M:
    """Read a bounded JSON document, check its digest/size if known, and validate it.

    Raises:
        ArchiveError: missing, too large, wrong digest or size, or not the expected JSON.
    """
    with store.open(name) as f:
        data = f.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        raise ArchiveError(f"{name} is larger than {MAX_JSON_BYTES} bytes, expected a small {what}")
    if size is not None and len(data) != size:
        raise ArchiveError(f"{name} is {len(data)} bytes, its descriptor says {size}")
    if digest is not None:
        actual = _digest_of(data, digest)
        if actual != digest:
            raise ArchiveError(f"{name} has digest {actual}, expected {digest}")
    try:
        return adapter.validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(document)"
        raise ArchiveError(f"{name} is not a valid {what}: {loc}: {first['msg']}") from exc


def _read_blob_json(store: Store, desc: _Descriptor, adapter: TypeAdapter[_M], what: str) -> _M:
    return _read_json(
        store, _blob_path(desc.digest), adapter, what, digest=desc.digest, size=desc.size
    )


def _digest_of(data: bytes, like: str) -> str:
    alg = like.partition(":")[0]
    return f"{alg}:{hashlib.new(alg, data).hexdigest()}"


def _apply_blob(
    store: Store,
    writer: TreeWriter,
    name: str,
    *,
    diff_id: str,
    digest: str | None,
    size: int | None = None,
    declared: Compression | None = None,
) -> str:
    """Apply one layer blob; check the stored digest/size and the uncompressed diff_id.

    Returns the digest of the blob as stored.

    Raises:
        ArchiveError: wrong compression, digest or size, or a hostile member.
    """
    label = digest or name
    with store.open(name) as f:
        magic = f.read(4)
    kind: Compression = (
        "gzip" if magic[:2] == GZIP_MAGIC else "zstd" if magic == ZSTD_MAGIC else "tar"
    )
    if declared is not None and declared != kind:
        raise ArchiveError(f"layer {label} is declared {declared} but its data is {kind}")
    algorithm = digest.partition(":")[0] if digest else "sha256"
    with store.open(name) as f, ExitStack() as stack:
        raw = Verified(f, name, algorithm=algorithm, size=size)
        stream = BoundedReader(decompressor(kind, raw, label, stack), writer)
        apply_layer(writer, stream, label)
        try:
            actual_diff = stream.drain()
            actual = raw.finish()
        except ArchiveError as exc:
            raise ArchiveError(f"layer {label}: {exc.message}") from exc
    if size is not None and raw.count != size:
        raise ArchiveError(f"layer {label} is {raw.count} bytes, its descriptor says {size}")
    if digest is not None and actual != digest:
        raise ArchiveError(f"layer {name} has digest {actual}, expected {digest}")
    if actual_diff != diff_id:
        raise ArchiveError(f"layer {label} uncompressed digest is {actual_diff}, diff_id {diff_id}")
    return actual
