"""``sealpod kms user``: add, rm, list."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from sealpod.cli._common import JsonOption, command, emit_json, out
from sealpod.cli.kms._shared import (
    CaOption,
    TokenFileOption,
    UrlOption,
    _admin,
    _render_list,
    _render_removed,
    _write_private,
    user_app,
)


class Role(StrEnum):
    """``--role``: the KMS's user roles."""

    ADMIN = "admin"
    OPERATOR = "operator"
    AUDITOR = "auditor"


@command(user_app, "add")
def user_add(
    name: str,
    role: Annotated[Role, typer.Option("--role", help="What the user may do (see docs/kms.md).")],
    out_token: Annotated[
        Path | None, typer.Option("--out-token", help="Write the new token to FILE (mode 600).")
    ] = None,
    url: UrlOption = None,
    ca: CaOption = None,
    token_file: TokenFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Add a user; its token is shown once (or written to --out-token)."""
    with _admin(url, ca, token_file) as client:
        token = client.add_user(name, role.value)
    if out_token is not None:
        _write_private(out_token, (token + "\n").encode())
    if json_output:
        payload: dict[str, object] = {"ok": True, "name": name, "role": role.value}
        if out_token is None:
            payload["token"] = token
        else:
            payload["token_file"] = str(out_token)
        emit_json(payload)
    elif out_token is not None:
        out.print(f"user {name} ({role}) added; token written to {out_token}")
    else:
        out.print(f"user {name} ({role}) added; token (shown once):")
        out.print(token, markup=False)


@command(user_app, "rm")
def user_rm(
    name: str,
    url: UrlOption = None,
    ca: CaOption = None,
    token_file: TokenFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Remove a user (the last admin cannot be removed)."""
    with _admin(url, ca, token_file) as client:
        client.remove_user(name)
    _render_removed("user", name, json_output)


@command(user_app, "list")
def user_list(
    url: UrlOption = None,
    ca: CaOption = None,
    token_file: TokenFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """List users and roles."""
    with _admin(url, ca, token_file) as client:
        items = client.list_users()
    _render_list(
        items,
        json_output,
        ["name", "role", "created"],
        lambda i: [i["name"], i["role"], i["created_at"]],
    )
