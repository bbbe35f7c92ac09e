"""A runnable image of a sealed bundle: :func:`write_image`.

Two layers, both deterministic tars written by :func:`sealpod.build.oci.write_layer`: the
runtime base (:mod:`sealpod.deploy.base`: Debian, Python, sealpod, bubblewrap, FUSE) and the
bundle at ``/bundle``. The config's entrypoint is ``sealpod run /bundle`` (its default
arguments pin the bundle's signer), its labels carry ``org.sealpod.measurement`` and
``org.sealpod.signer``, and its environment the KMS URL and pinned identity when known.

Without a bundle (``sealpod image --base``) the image is the runtime base alone, entrypoint
``sealpod``: what the KMS Deployment runs (``deploy/kubernetes``).

The output is one archive that ``podman load`` and ``docker load`` read:

- ``oci``: an OCI image layout in a tar (``oci-layout``, ``index.json`` naming the tag in
  ``org.opencontainers.image.ref.name``, ``blobs/sha256/...``);
- ``docker``: the ``docker save`` layout (``manifest.json`` with ``RepoTags``, the config and
  layers as blobs).

The archive itself is deterministic too (sorted entries, mtime 0, owner 0, no compression),
so the same bundle, base and options give the same bytes, the same manifest digest and the
same image id (the config digest) on every run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sealpod.build.bundle import Bundle
from sealpod.build.oci import (
    CONFIG_TYPE,
    LAYER_TYPE,
    MANIFEST_TYPE,
    PLATFORM,
    put_json,
    write_layer,
)
from sealpod.deploy import container as ct
from sealpod.deploy.base import VENV, RuntimeBase
from sealpod.deploy.kube_common import check_fingerprint, check_url
from sealpod.errors import BundleError, ConfigError

ImageFormat = Literal["oci", "docker"]
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
#: The epoch as the creation time: a real time would change the digest on every build.
CREATED = "1970-01-01T00:00:00Z"
_TAG_RE = re.compile(
    r"(?:[a-zA-Z0-9.-]+(?::[0-9]{1,5})?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r":[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
)
PATH_ENV = f"PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageOptions:
    format: ImageFormat = "oci"
    tag: str | None = None
    kms_url: str | None = None
    kms_identity: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageResult:
    path: Path
    format: ImageFormat
    tag: str | None
    manifest_digest: str
    image_id: str  # the config's digest, as `docker images --no-trunc` shows it
    diff_ids: tuple[str, ...]
    size: int


def image_config(
    bundle: Bundle | None, options: ImageOptions, diff_ids: list[str]
) -> dict[str, Any]:
    """The image config (pure): entrypoint, default arguments, environment, labels, layers.
    Without a bundle: the runtime base alone, entrypoint ``sealpod`` (the KMS's image).

    Raises:
        ConfigError: a malformed KMS URL or identity.
    """
    spec_kms = bundle.manifest.kms if bundle is not None else None
    kms_url = options.kms_url or (spec_kms.url if spec_kms else None)
    identity = options.kms_identity or (spec_kms.identity if spec_kms else None)
    env = [PATH_ENV, f"{ct.ENV_HOME}={ct.SEALPOD_HOME}"]
    if kms_url is not None:
        env.append(f"{ct.ENV_KMS_URL}={check_url(kms_url, 'KMS URL')}")
    if identity is not None:
        env.append(f"{ct.ENV_KMS_IDENTITY}={check_fingerprint(identity, 'KMS identity')}")
    history = [{"created": CREATED, "created_by": "sealpod image: runtime base (Debian, sealpod)"}]
    if bundle is None:
        entrypoint, cmd = ["sealpod"], ["--help"]
        labels = {"org.opencontainers.image.title": "sealpod"}
    else:
        entrypoint, cmd = list(ct.ENTRYPOINT), ["--signer", bundle.signer_id.hex()]
        labels = {
            ct.LABEL_MEASUREMENT: bundle.measurement.hex(),
            ct.LABEL_SIGNER: bundle.signer_id.hex(),
            "org.opencontainers.image.title": "sealed pod",
        }
        history.append(
            {"created": CREATED, "created_by": f"sealpod image: bundle at {ct.BUNDLE_PATH}"}
        )
    return {
        **PLATFORM,
        "created": CREATED,
        "config": {
            "Entrypoint": entrypoint,
            "Cmd": cmd,
            "Env": env,
            "WorkingDir": "/",
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }


def write_image(
    bundle: Bundle | None, base: RuntimeBase, out: Path, options: ImageOptions
) -> ImageResult:
    """Write the image archive to ``out`` (replaced atomically when it exists); without a
    bundle, the runtime base alone (an image for the KMS).

    Raises:
        ConfigError: a bad tag, KMS URL or identity, or ``out`` is a directory.
        BundleError: the bundle holds something a layer cannot (a device node) or the archive
            cannot be written.
    """
    if options.tag is not None and (len(options.tag) > 255 or not _TAG_RE.fullmatch(options.tag)):
        raise ConfigError(f"tag is {options.tag[:80]!r}, expected NAME:TAG such as demo:1.0")
    if out.is_dir():
        raise ConfigError(f"{out} is a directory, expected an archive path such as image.tar")
    parent = out.resolve().parent
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=parent) as tmp:
        blobs = Path(tmp) / "blobs"
        blobs.mkdir()
        diff_ids = [base.diff_id]
        layers: list[dict[str, object]] = [
            {"mediaType": LAYER_TYPE, "digest": base.diff_id, "size": base.size}
        ]
        members: dict[str, Path | bytes] = {f"blobs/sha256/{_hex(base.diff_id)}": base.layer}
        annotations: dict[str, str] = {}
        if bundle is not None:
            try:
                layer, bundle_diff = write_layer(
                    bundle.path, blobs, prefix=ct.BUNDLE_PATH.strip("/")
                )
            except OSError as exc:
                raise BundleError(f"cannot pack the bundle {bundle.path}: {exc}") from exc
            diff_ids.append(bundle_diff)
            layers.append(layer.descriptor(LAYER_TYPE))
            members[f"blobs/sha256/{_hex(bundle_diff)}"] = blobs / _hex(layer.digest)
            annotations = {
                ct.LABEL_MEASUREMENT: bundle.measurement.hex(),
                ct.LABEL_SIGNER: bundle.signer_id.hex(),
            }
        config = put_json(blobs, image_config(bundle, options, diff_ids))
        members[f"blobs/sha256/{_hex(config.digest)}"] = blobs / _hex(config.digest)
        body: dict[str, object] = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": config.descriptor(CONFIG_TYPE),
            "layers": layers,
        }
        if annotations:
            body["annotations"] = annotations
        manifest = put_json(blobs, body)
        if options.format == "oci":
            members[f"blobs/sha256/{_hex(manifest.digest)}"] = blobs / _hex(manifest.digest)
            descriptor: dict[str, Any] = {**manifest.descriptor(MANIFEST_TYPE)}
            descriptor["platform"] = PLATFORM
            if options.tag is not None:
                descriptor["annotations"] = {REF_NAME: options.tag}
            index = {"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": [descriptor]}
            members["index.json"] = _json(index)
            members["oci-layout"] = _json({"imageLayoutVersion": "1.0.0"})
        else:
            entry = {
                "Config": f"blobs/sha256/{_hex(config.digest)}",
                "RepoTags": [options.tag] if options.tag else [],
                "Layers": [f"blobs/sha256/{_hex(d)}" for d in diff_ids],
            }
            members["manifest.json"] = _json([entry])
        staged = Path(tmp) / "image.tar"
        try:
            _write_archive(staged, members)
            size = staged.stat().st_size
            os.replace(staged, out)
        except OSError as exc:
            raise BundleError(f"cannot write the image {out}: {exc}") from exc
    return ImageResult(
        path=out,
        format=options.format,
        tag=options.tag,
        manifest_digest=manifest.digest,
        image_id=config.digest,
        diff_ids=tuple(diff_ids),
        size=size,
    )


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1]


def _json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _write_archive(path: Path, members: dict[str, Path | bytes]) -> None:
    """A deterministic tar: directories first, then members sorted by name, mtime 0, owner 0."""
    names = sorted(members)
    dirs = sorted({"/".join(n.split("/")[:i]) for n in names for i in range(1, n.count("/") + 1)})
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for name in dirs:
            tf.addfile(_info(name, tarfile.DIRTYPE, 0o755, 0))
        for name in names:
            content = members[name]
            if isinstance(content, bytes):
                tf.addfile(_info(name, tarfile.REGTYPE, 0o644, len(content)), io.BytesIO(content))
            else:
                with content.open("rb") as src:
                    size = os.fstat(src.fileno()).st_size
                    tf.addfile(_info(name, tarfile.REGTYPE, 0o644, size), src)


def _info(name: str, kind: bytes, mode: int, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.mtime = kind, mode, size, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def archive_digest(path: Path) -> str:
    """``sha256:<hex>`` of a whole archive (for reproducibility checks)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"
