"""``python``: a Python 3.11 runtime base. The user adds an app directory and a script; the
catalog's example is an HTTPS key-value app reading its database password from an env secret."""

from __future__ import annotations

from collections.abc import Mapping

from sealpod.catalog.model import Layout, Param, ParamValue, Recipe, RootfsFile
from sealpod.catalog.recipes._common import (
    ALL_BACKENDS,
    common_params,
    password_secret,
    tls_files,
    tls_secret,
)
from sealpod.catalog.recipes.python_app import EXAMPLE_APP
from sealpod.catalog.spec import PodParts, spec_toml

DATA = "/data"
APP = "/app"
EXAMPLE = "example"


def render(values: Mapping[str, ParamValue]) -> Layout:
    """The python pod for ``values`` (``app_dir=example`` adds the example app)."""
    name = str(values["name"])
    secrets = (
        password_secret(f"{name}-db-password", "the app's database password (DB_PASSWORD)"),
        tls_secret(values),
    )
    parts = PodParts(
        title=f"Python app from the sealpod catalog (instance {name})",
        entrypoint="/usr/bin/python3",
        args=(f"{APP}/{values['script']}",),
        workdir=APP,
        user="app",
        env=(
            ("APP_PORT", str(values["port"])),
            ("APP_DATA", DATA),
            ("PYTHONDONTWRITEBYTECODE", "1"),
            ("PYTHONUNBUFFERED", "1"),
        ),
        secret_env=(("DB_PASSWORD", f"{name}-db-password"),),
        files=tls_files(values),
        volumes=((name, DATA),),
        rollback_window_ms=int(values["rollback_window_ms"]),
        ready_tcp=f"127.0.0.1:{values['port']}",
        product_id=int(values["product_id"]),
        memory=str(values["memory"]),
        backends=ALL_BACKENDS,
    )
    files: tuple[RootfsFile, ...] = ()
    if values["app_dir"] == EXAMPLE:
        files = (RootfsFile(path=f"{APP}/app.py", text=EXAMPLE_APP, mode=0o755),)
    return Layout(
        recipe="python",
        spec_toml=spec_toml(parts),
        files=files,
        dirs=(DATA, APP),
        secrets=secrets,
        volumes=((name, DATA),),
        ports=(("https", int(values["port"])),),
        ready_tcp=parts.ready_tcp,
        product_id=parts.product_id,
    )


RECIPE = Recipe(
    name="python",
    summary="Python 3.11 runtime base with an example HTTPS app (DB password from an env secret)",
    packages=("python3-minimal", "libpython3.11-stdlib"),
    user="app",
    params=(
        Param(name="port", kind="port", default=18080, help="the app's port (env APP_PORT)"),
        Param(
            name="app_dir",
            kind="text",
            default=EXAMPLE,
            help="a host directory copied to /app, or 'example' for the example app",
        ),
        Param(
            name="script",
            kind="text",
            default="app.py",
            help="the script under /app that python3 runs",
        ),
        *common_params("python", 0x5206),
    ),
    render=render,
    copy_params=(("app_dir", APP),),
    fallback_uid=1000,
)
