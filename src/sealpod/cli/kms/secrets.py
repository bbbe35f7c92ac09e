"""``sealpod kms secret``: put, rotate, get, list, versions, rm."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from sealpod.cli._common import JsonOption, command, emit_json, out
from sealpod.cli.kms._shared import (
    CaOption,
    FromEnv,
    FromFile,
    TokenFileOption,
    UrlOption,
    _admin,
    _read_value,
    _render_list,
    _render_removed,
    _write_private,
    secret_app,
)
from sealpod.errors import ConfigError


@command(secret_app, "put")
def secret_put(
    name: str,
    from_file: FromFile = None,
    from_env: FromEnv = None,
    generate: Annotated[
        str | None,
        typer.Option("--generate", help="Generate: bytes:N, password, or tls-cert (with --dns)."),
    ] = None,
    dns: Annotated[list[str] | None, typer.Option("--dns", help="tls-cert: a name.")] = None,
    validity_days: Annotated[
        int,
        typer.Option(
            "--validity-days", min=1, max=825, help="With --generate tls-cert: days it is valid."
        ),
    ] = 30,
    url: UrlOption = None,
    ca: CaOption = None,
    token_file: TokenFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Create a secret from a file or an environment variable, or have the KMS generate it."""
    value = _read_value(from_file, from_env)
    if (value is None) == (generate is None):
        raise ConfigError("give exactly one of --from-file, --from-env or --generate")
    with _admin(url, ca, token_file) as client:
        info = client.put_secret(
            name, value=value, generate=generate, dns=list(dns or []), validity_days=validity_days
        )
    if json_output:
        emit_json({"ok": True, **info})
    else:
        out.print(f"secret {name} stored ({info['kind']}, version {info['current_version']})")


@command(secret_app, "rotate")
def secret_rotate(
    name: str,
    from_file: FromFile = None,
    from_env: FromEnv = None,
    url: UrlOption = None,
    ca: CaOption = None,
    token_file: TokenFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Add a new version: a new value for owner-set secrets, regenerated for generated ones."""
    value = _read_value(from_file, from_env)
    with _admin(url, ca, token_file) as client:
        info = client.rotate_secret(name, value=value)
    if json_output:
        emit_json({"ok": True, **info})
    else:
        out.print(f"secret {name} is now at version {info['current_version']}")


@command(secret_app, "get")
def secret_get(
    name: str,
    version: Annotated[
        int | None, typer.Option("--version", min=1, help="This version (default: the current).")
    ] = None,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write the value to FILE (mode 600).")
    ] = None,
    url: UrlOption = None,
    ca: CaOption = None,
    token_file: TokenFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Read a secret's value (admin role only; audited)."""
    with _admin(url, ca, token_file) as client:
        got_version, kind, value = client.get_secret(name, version=version)
    if out_file is not None:
        _write_private(out_file, value)
    if json_output:
        payload: dict[str, object] = {
            "ok": True,
            "name": name,
            "version": got_version,
            "kind": kind,
        }
        if out_file is None:
            payload["value_base64"] = base64.b64encode(value).decode()
        else:
            payload["file"] = str(out_file)
        emit_json(payload)
    elif kind == "tls-cert" and out_file is None:
        # Not a stored value: each release issues a fresh key and certificate (no admin read
        # can show "the" certificate), so say what a release gets instead of printing JSON.
        params = json.loads(value)
        out.print(
            f"secret {name} (version {got_version}) is a TLS certificate issued at each release: "
            f"a fresh P-256 key and a certificate for {', '.join(params.get('dns', []))}, valid "
            f"{params.get('validity_days')} days, signed by the KMS CA (GET /v1/ca). Its "
            "parameters, as stored, are in --json or --out."
        )
    elif out_file is None:
        sys.stdout.buffer.write(value)
        sys.stdout.buffer.flush()
    else:
        out.print(f"secret {name} version {got_version} written to {out_file}")


@command(secret_app, "list")
def secret_list(
    url: UrlOption = None,
    ca: CaOption = None,
    token_file: TokenFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """List secrets (names, kinds, versions — never values)."""
    with _admin(url, ca, token_file) as client:
        items = client.list_secrets()
    _render_list(
        items,
        json_output,
        ["name", "kind", "version", "updated"],
        lambda i: [i["name"], i["kind"], str(i["current_version"]), i["updated_at"]],
    )


@command(secret_app, "versions")
def secret_versions(
    name: str,
    url: UrlOption = None,
    ca: CaOption = None,
    token_file: TokenFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """List the versions of a secret."""
    with _admin(url, ca, token_file) as client:
        items = client.secret_versions(name)
    _render_list(
        items,
        json_output,
        ["version", "created", "current"],
        lambda i: [str(i["version"]), i["created_at"], "*" if i["current"] else ""],
    )


@command(secret_app, "rm")
def secret_rm(
    name: str,
    url: UrlOption = None,
    ca: CaOption = None,
    token_file: TokenFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Delete a secret and all its versions."""
    with _admin(url, ca, token_file) as client:
        client.remove_secret(name)
    _render_removed("secret", name, json_output)
