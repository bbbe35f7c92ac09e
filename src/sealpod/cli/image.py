"""``sealpod image``: a sealed bundle as a runnable container image (OCI or docker archive).

Rendering only: :mod:`sealpod.deploy.base` builds (or takes from the cache) the runtime base,
:mod:`sealpod.deploy.image` writes the archive.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from sealpod.cli._common import JsonOption, command, emit_json, err, out


class ImageFormatName(enum.StrEnum):
    OCI = "oci"
    DOCKER = "docker"


def image_cmd(
    bundle_dir: Annotated[
        Path | None, typer.Argument(help="The sealed bundle to put in the image.")
    ] = None,
    out_path: Annotated[
        Path | None, typer.Option("--out", "-o", help="The image archive to write.")
    ] = None,
    base_only: Annotated[
        bool,
        typer.Option("--base", help="No bundle: the runtime base alone (the KMS's image)."),
    ] = False,
    fmt: Annotated[
        ImageFormatName, typer.Option("--format", help="oci (OCI layout tar) or docker.")
    ] = ImageFormatName.OCI,
    tag: Annotated[
        str | None, typer.Option("--tag", help="NAME:TAG the engine loads it as.")
    ] = None,
    kms: Annotated[
        str | None, typer.Option("--kms", help="KMS URL for the image's env (default: spec).")
    ] = None,
    kms_identity: Annotated[
        str | None, typer.Option("--kms-identity", help="Pinned KMS identity (SHA-256 hex).")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Write BUNDLE as a runnable image whose entrypoint is `sealpod run /bundle`.

    The runtime base (Debian, Python, sealpod, bubblewrap, fuse3) is built with mmdebstrap on
    first use and cached under $SEALPOD_HOME/cache; the same inputs give the same digest.
    With --base instead of BUNDLE: the base alone, entrypoint `sealpod` (for the KMS).
    """
    from sealpod.build.bundle import load_bundle
    from sealpod.deploy.base import ensure_runtime_base
    from sealpod.deploy.image import ImageOptions, write_image
    from sealpod.errors import ConfigError

    if out_path is None:
        raise ConfigError("give the image archive to write with -o/--out FILE")
    if (bundle_dir is None) == (not base_only):
        raise ConfigError("give a BUNDLE, or --base for the runtime base alone (not both)")
    bundle = load_bundle(bundle_dir) if bundle_dir is not None else None
    options = ImageOptions(format=fmt.value, tag=tag, kms_url=kms, kms_identity=kms_identity)

    def say(message: str) -> None:
        if not json_output:
            err.print(f"sealpod image: {message}", markup=False)

    base = ensure_runtime_base(progress=say)
    result = write_image(bundle, base, out_path, options)
    report = {
        "ok": True,
        "path": str(result.path),
        "format": result.format,
        "tag": result.tag,
        "manifest_digest": result.manifest_digest,
        "image_id": result.image_id,
        "layers": list(result.diff_ids),
        "size": result.size,
        "base_cached": not base.built,
        "measurement": bundle.measurement.hex() if bundle else None,
        "signer_id": bundle.signer_id.hex() if bundle else None,
    }
    if json_output:
        emit_json(report)
        return
    out.print(f"wrote {result.path} ({result.format}, {result.size} bytes)", markup=False)
    out.print(f"  manifest digest: {result.manifest_digest}", markup=False)
    out.print(f"  image id:        {result.image_id}", markup=False)
    if result.tag:
        out.print(f"  tag:             {result.tag}", markup=False)


def register(app: typer.Typer) -> None:
    """Add ``sealpod image`` to the root app."""
    command(app, "image")(image_cmd)
