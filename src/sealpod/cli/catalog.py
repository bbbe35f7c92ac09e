"""``sealpod catalog list|show|build``: ready pods for common software (docs/catalog.md)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer

from sealpod.cli._common import JsonOption, command, emit_json, out

catalog_app = typer.Typer(
    help="Ready confidential pods: redis, mariadb, postgresql, nginx, mosquitto, python.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

NameArg = Annotated[str, typer.Argument(metavar="NAME", help="Catalog entry (see: catalog list).")]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Parameter NAME=VALUE (repeatable; see: catalog show NAME)."),
]


def list_cmd(json_output: JsonOption = False) -> None:
    """List the catalog's entries."""
    from sealpod.catalog.recipes import RECIPES

    if json_output:
        emit_json([{"name": r.name, "summary": r.summary} for r in RECIPES.values()])
        return
    for r in RECIPES.values():
        out.print(f"{r.name:<11} {r.summary}", markup=False, highlight=False)


def show_cmd(name: NameArg, settings: SetOption = None, json_output: JsonOption = False) -> None:
    """What an entry runs: packages, user, parameters, secrets, volumes, ports, policy."""
    from sealpod.catalog.model import resolve_params
    from sealpod.catalog.recipes import get_recipe
    from sealpod.catalog.rootfs import SUITE, cache_key
    from sealpod.catalog.spec import policy_toml

    recipe = get_recipe(name)
    values = resolve_params(recipe, settings or [])
    layout = recipe.render(values)
    policy = policy_toml(layout, measurement=None, signer=None, allow_simulation=True)
    info = {
        "name": recipe.name,
        "summary": recipe.summary,
        "suite": SUITE,
        "packages": list(recipe.packages),
        "user": recipe.user,
        "cache_key": cache_key(recipe),
        "parameters": [
            {
                "name": p.name,
                "kind": p.kind,
                "default": p.default,
                "value": values[p.name],
                "help": p.help,
            }
            for p in recipe.params
        ],
        "secrets": [
            {
                "name": s.name,
                "generate": s.generate,
                "dns": list(s.dns),
                "purpose": s.purpose,
                "command": s.put_command(),
            }
            for s in layout.secrets
        ],
        "volumes": [{"name": n, "path": p, "key_secret": f"volume.{n}"} for n, p in layout.volumes],
        "ports": [{"what": w, "port": p, "address": "127.0.0.1"} for w, p in layout.ports],
        "ready_tcp": layout.ready_tcp,
        "released_secrets": layout.released_secrets(),
        "spec": layout.spec_toml,
        "policy": policy,
    }
    if json_output:
        emit_json(info)
        return
    p = out.print
    p(f"{recipe.name}: {recipe.summary}", markup=False, highlight=False)
    p(f"  Debian {SUITE} packages: {', '.join(recipe.packages)}", markup=False, highlight=False)
    p(
        f"  runs as: {recipe.user}; ready when 127.0.0.1 port answers: {layout.ready_tcp}",
        markup=False,
        highlight=False,
    )
    p("  parameters (--set NAME=VALUE):", markup=False)
    for param in recipe.params:
        p(
            f"    {param.name:<18} {values[param.name]!s:<22} {param.help}",
            markup=False,
            highlight=False,
        )
    p("  secrets (create in the KMS):", markup=False)
    for s in layout.secrets:
        p(f"    {s.put_command()}   # {s.purpose}", markup=False, highlight=False)
    p("  volumes:", markup=False)
    for vname, vpath in layout.volumes:
        p(f"    {vpath}  (key: KMS secret volume.{vname})", markup=False, highlight=False)
    p(
        "  ports: " + ", ".join(f"{w} 127.0.0.1:{port}" for w, port in layout.ports),
        markup=False,
        highlight=False,
    )
    p("  sample release policy:", markup=False)
    for line in policy.splitlines():
        p(f"    {line}", markup=False, highlight=False)


def build_cmd(
    name: NameArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to create.")],
    settings: SetOption = None,
    key: Annotated[
        Path | None,
        typer.Option("--key", "-k", help="Author key: also build and sign DIR/bundle."),
    ] = None,
    image: Annotated[
        Path | None,
        typer.Option("--image", help="Start from this docker save / OCI archive (not Debian)."),
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option("--cache-dir", help="Rootfs cache (default: $SEALPOD_HOME/cache/catalog)."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Write an entry's rootfs, pod spec and sample release policy into DIR."""
    from sealpod.build.keys import load_private_key, read_passphrase
    from sealpod.catalog.build import build_entry
    from sealpod.catalog.model import resolve_params
    from sealpod.catalog.recipes import get_recipe
    from sealpod.cli.bundle import _signing_time
    from sealpod.settings import sealpod_home

    recipe = get_recipe(name)
    values = resolve_params(recipe, settings or [])
    author = None if key is None else load_private_key(key, read_passphrase(None, os.environ))
    cache = cache_dir if cache_dir is not None else sealpod_home() / "cache" / "catalog"
    if not json_output:
        out.print(f"Building {recipe.name} into {output} ...", markup=False, highlight=False)
    started = time.perf_counter()
    result = build_entry(
        recipe,
        values,
        output,
        cache_dir=cache,
        image=image,
        key=author,
        signed_at=_signing_time() if author is not None else None,
    )
    elapsed = time.perf_counter() - started
    bundle = result.bundle
    summary = {
        "ok": True,
        "name": recipe.name,
        "out": str(output),
        "spec": str(result.spec_path),
        "policy": str(result.policy_path),
        "rootfs": {
            "kind": result.source.kind,
            "cache_key": result.source.cache_key,
            "cached": result.source.cached,
        },
        "bundle": None
        if bundle is None
        else {
            "path": str(bundle.path),
            "measurement": bundle.measurement.hex(),
            "signer_id": bundle.signer_id.hex(),
        },
        "secrets": [s.put_command() for s in result.layout.secrets],
        "seconds": round(elapsed, 3),
    }
    if json_output:
        emit_json(summary)
        return
    how = "cached" if result.source.cached else "built"
    src = f"from {image}" if image is not None else f"mmdebstrap rootfs ({how})"
    out.print(f"Wrote {output} in {elapsed:.1f} s: {src}", markup=False, highlight=False)
    out.print(f"  spec    {result.spec_path}", markup=False, highlight=False)
    out.print(
        f"  policy  {result.policy_path} (sample: read its comments)", markup=False, highlight=False
    )
    if bundle is not None:
        out.print(f"  bundle  {bundle.path}", markup=False, highlight=False)
        out.print(f"  measurement {bundle.measurement.hex()}", markup=False, highlight=False)
        out.print(f"  signer id   {bundle.signer_id.hex()}", markup=False, highlight=False)
    out.print("Secrets to create in the KMS:", markup=False)
    for cmd in (s.put_command() for s in result.layout.secrets):
        out.print(f"  {cmd}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``catalog`` command group to the root app."""
    command(catalog_app, "list")(list_cmd)
    command(catalog_app, "show")(show_cmd)
    command(catalog_app, "build")(build_cmd)
    app.add_typer(catalog_app, name="catalog")
