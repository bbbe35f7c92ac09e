"""``sealpod catalog build``: write an entry's rootfs, pod spec and sample release policy into a
directory, and (given an author key) build and sign its bundle in the same step."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sealpod.build.bundle import Bundle, remove_tree
from sealpod.build.keys import AuthorPrivateKey
from sealpod.catalog.model import Layout, ParamValue, Recipe
from sealpod.catalog.rootfs import (
    RootfsSource,
    apply_layout,
    copy_rootfs,
    debian_rootfs,
    import_image,
    make_dir,
)
from sealpod.catalog.spec import policy_toml, secret_summary
from sealpod.errors import ConfigError, ToolError

SPEC_NAME = "sealpod.toml"
POLICY_NAME = "policy.toml"
ROOTFS_NAME = "rootfs"
BUNDLE_NAME = "bundle"
README_NAME = "README.txt"


@dataclass(frozen=True, slots=True, kw_only=True)
class CatalogBuild:
    """What ``build_entry`` wrote."""

    out: Path
    layout: Layout
    source: RootfsSource
    bundle: Bundle | None

    @property
    def spec_path(self) -> Path:
        """The pod spec, ready for ``sealpod build --spec``."""
        return self.out / SPEC_NAME

    @property
    def policy_path(self) -> Path:
        """The sample release policy."""
        return self.out / POLICY_NAME


def build_entry(
    recipe: Recipe,
    values: Mapping[str, ParamValue],
    out: Path,
    *,
    cache_dir: Path,
    image: Path | None = None,
    key: AuthorPrivateKey | None = None,
    signed_at: datetime | None = None,
) -> CatalogBuild:
    """Write ``recipe`` rendered with ``values`` into the new directory ``out``.

    The rootfs comes from ``image`` (a ``docker save`` / OCI archive or layout) when given,
    otherwise from the cached mmdebstrap build of the recipe's packages. With ``key`` (and
    ``signed_at``) the bundle is built into ``out/bundle`` and the policy pins its measurement.

    Raises:
        ConfigError: ``out`` exists and is not empty; a copied parameter directory is missing.
        ToolError: mmdebstrap is missing or failed.
        ArchiveError: ``image`` is malformed or hostile, or a recipe path meets a link in it.
        SpecError: the rendered spec does not fit the rootfs.
        BundleError: the bundle cannot be written.
    """
    layout = recipe.render(values)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not an empty directory")
    for pname, _ in recipe.copy_params:
        src = Path(str(values[pname]))
        if values[pname] != "example" and not src.is_dir():
            raise ConfigError(f"parameter {pname}: {src} is not a directory")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _write_entry(recipe, values, layout, out, cache_dir, image, key, signed_at)
    except BaseException:
        # Nothing half-written stays behind: the directory is removed (or emptied).
        remove_tree(out)
        if not created:
            out.mkdir()
        raise


def _write_entry(
    recipe: Recipe,
    values: Mapping[str, ParamValue],
    layout: Layout,
    out: Path,
    cache_dir: Path,
    image: Path | None,
    key: AuthorPrivateKey | None,
    signed_at: datetime | None,
) -> CatalogBuild:
    rootfs = out / ROOTFS_NAME
    if image is not None:
        source = import_image(image, rootfs)
    else:
        source = debian_rootfs(recipe, cache_dir)
        copy_rootfs(source.path, rootfs)
    apply_layout(rootfs, recipe, layout)
    _copy_params(recipe, values, rootfs)
    (out / SPEC_NAME).write_text(layout.spec_toml)
    bundle = None
    if key is not None:
        bundle = _build_bundle(out, key, signed_at)
    policy = policy_toml(
        layout,
        measurement=None if bundle is None else bundle.measurement.hex(),
        signer=None if bundle is None else bundle.signer_id.hex(),
        allow_simulation=True,
    )
    (out / POLICY_NAME).write_text(policy)
    (out / README_NAME).write_text(_readme(recipe, layout, bundle is not None))
    return CatalogBuild(out=out, layout=layout, source=source, bundle=bundle)


def _copy_params(recipe: Recipe, values: Mapping[str, ParamValue], rootfs: Path) -> None:
    for pname, target in recipe.copy_params:
        if values[pname] == "example":
            continue
        make_dir(rootfs, target)  # a real directory: never a link in the image
        dest = rootfs / target.lstrip("/")
        try:
            shutil.copytree(Path(str(values[pname])), dest, symlinks=True, dirs_exist_ok=True)
        except (OSError, shutil.Error) as exc:
            raise ToolError(f"cannot copy {values[pname]} into {target}: {exc}") from exc


def _build_bundle(out: Path, key: AuthorPrivateKey, signed_at: datetime | None) -> Bundle:
    from sealpod.build.bundle import build_bundle
    from sealpod.spec.load import image_source, load_spec

    if signed_at is None:
        raise ConfigError("signed_at is required to sign a bundle")
    spec_file = out / SPEC_NAME
    pod = load_spec(spec_file)
    return build_bundle(
        pod,
        image=image_source(pod, spec_file),
        key=key,
        out=out / BUNDLE_NAME,
        signed_at=signed_at,
    )


def _readme(recipe: Recipe, layout: Layout, built: bool) -> str:
    lines = [
        f"sealpod catalog entry {recipe.name}: {recipe.summary}",
        "",
        "1. Create its secrets in the KMS:",
        *(f"   {cmd}" for cmd in secret_summary(layout)),
        "   (volume keys are made by the KMS at the first release: generate_volume_keys)",
    ]
    if not built:
        lines += [
            "2. Build and sign: sealpod build --spec sealpod.toml --key KEY -o bundle",
            "   then put the signer id (sealpod inspect bundle) into policy.toml",
        ]
    else:
        lines += ["2. The bundle is built in ./bundle; policy.toml pins its signer and measurement"]
    lines += [
        "3. sealpod kms policy put NAME policy.toml   (read its comments first)",
        "4. sealpod run bundle --signer ID --kms URL --kms-identity HEX --network host",
        "",
        "Ports (127.0.0.1): " + ", ".join(f"{what} {port}" for what, port in layout.ports),
        "",
    ]
    return "\n".join(lines)
