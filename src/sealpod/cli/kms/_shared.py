"""What every ``sealpod kms`` command shares: the Typer apps, the common options, and the
connection, token, file and table helpers.

Nothing here imports :mod:`sealpod.kms`, ``rich.table`` or ``httpx`` at module level: the
helpers import what they call, so registering the commands stays cheap.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sealpod._files import read_limited, write_atomic
from sealpod.cli._common import emit_json, err, out
from sealpod.errors import ConfigError

if TYPE_CHECKING:
    from sealpod.kms.shamir import Share

TOKEN_ENV = "SEALPOD_KMS_TOKEN"  # noqa: S105 - an environment variable name
URL_ENV = "SEALPOD_KMS_URL"
CA_ENV = "SEALPOD_KMS_CA"
#: A secret value read from a file; the server enforces its own (smaller) limit.
MAX_VALUE_FILE = 4 * 1024 * 1024

kms_app = typer.Typer(
    name="kms",
    help="The key broker: attested secret release, secrets, policies, users, audit.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
secret_app = typer.Typer(
    help="Secrets: put, get, list, rm, rotate, versions.", no_args_is_help=True
)
policy_app = typer.Typer(help="Release policies: put, list, get, rm, test.", no_args_is_help=True)
user_app = typer.Typer(help="Admin users and roles: add, rm, list.", no_args_is_help=True)
kms_app.add_typer(secret_app, name="secret")
kms_app.add_typer(policy_app, name="policy")
kms_app.add_typer(user_app, name="user")

UrlOption = Annotated[
    str | None, typer.Option("--url", help=f"KMS URL (default: ${URL_ENV} or server.json).")
]
CaOption = Annotated[
    Path | None,
    typer.Option("--ca", help=f"PEM certificate to trust for the KMS (default: ${CA_ENV})."),
]
TokenFileOption = Annotated[
    Path | None,
    typer.Option(
        "--token-file", help=f"Admin token file (default: ${TOKEN_ENV} or kms/admin.token)."
    ),
]
#: The current master key, for the commands that work on the database directly.
CurrentKeyFileOption = Annotated[
    Path | None,
    typer.Option(
        "--master-key-file",
        help="The current key file (default: $SEALPOD_KMS_MASTER_KEY, else kms/master.key).",
    ),
]
CurrentShareFileOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--share-file", help="A current unseal share (repeatable; else stdin or a prompt)."
    ),
]
DbOption = Annotated[
    str | None,
    typer.Option("--db", help="Database URL (default: SQLite in $SEALPOD_HOME/kms)."),
]


# -- connection helpers --------------------------------------------------------------------------
def _connection(url: str | None, ca: Path | None) -> tuple[str, bool | str]:
    from sealpod.kms.serverinfo import read_server_info

    info = read_server_info() or {}
    chosen = url or os.environ.get(URL_ENV) or (str(info["url"]) if info.get("url") else None)
    if not chosen:
        raise ConfigError(
            f"no KMS URL: pass --url, set ${URL_ENV}, or start `sealpod kms serve` on this host"
        )
    ca_path = ca or (Path(os.environ[CA_ENV]) if os.environ.get(CA_ENV) else None)
    if ca_path is None and info.get("ca") and chosen == info.get("url"):
        ca_path = Path(str(info["ca"]))
    if ca_path is not None and not ca_path.is_file():
        raise ConfigError(f"CA certificate {ca_path} does not exist")
    return chosen, (str(ca_path) if ca_path is not None else True)


def _token(token_file: Path | None) -> str:
    from sealpod.kms.settings import kms_home

    if token_file is None and os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV].strip()
    path = token_file or (kms_home() / "admin.token")
    if token_file is None and not path.exists():
        raise ConfigError(f"no admin token: set ${TOKEN_ENV} or pass --token-file ({path} absent)")
    token = _read_text(path, "admin token file", 4096)
    if not token:
        raise ConfigError(f"admin token file {path} is empty")
    return token


def _admin(url: str | None, ca: Path | None, token_file: Path | None) -> Any:
    from sealpod.kms.admin_client import AdminClient

    base, verify = _connection(url, ca)
    return AdminClient(base, token=_token(token_file), verify=verify)


def _read_text(path: Path, what: str, limit: int) -> str:
    raw = read_limited(path, what, limit=limit, error=ConfigError)
    try:
        return raw.decode().strip()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text") from exc


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only: a new 0600 file renamed into
    place, so the secret never sits in a file others could open; a symlink planted at ``path``
    (in a shared ``--out-dir``) is refused, never written through."""
    try:
        write_atomic(path, data, mode=0o600)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from exc


def _print_shares(header: str, parts: Sequence[Share], footer: str) -> None:
    """Show new shares on stdout (before the commit that makes them the key: a terminal that
    cannot take them rolls the change back).

    Raises:
        ConfigError: stdout failed; nothing was changed.
    """
    try:
        out.print(header)
        for share in parts:
            out.print(f"  {share.to_text()}")
        out.print(footer)
        out.file.flush()
    except OSError as exc:
        raise ConfigError(
            f"the new shares could not be shown ({exc.strerror or exc}); nothing was changed"
        ) from exc


def _say_printed(committed: bool | None, what: str) -> None:
    """After a failure: tell whether the ``what`` printed above count, on stderr."""
    if committed is False:
        err.print(f"the {what} printed above are VOID: nothing changed", markup=False)
    elif committed:
        err.print(f"the change WAS committed: keep the {what} printed above", markup=False)
    else:
        err.print(
            f"whether the change was committed is unknown (the database did not answer): keep "
            f"the {what} printed above until it is known",
            markup=False,
        )


def _read_value(from_file: Path | None, from_env: str | None) -> bytes | None:
    if from_file is not None and from_env is not None:
        raise ConfigError("give only one of --from-file and --from-env")
    if from_file is not None:
        if str(from_file) == "-":
            data = sys.stdin.buffer.read(MAX_VALUE_FILE + 1)
            if len(data) > MAX_VALUE_FILE:
                raise ConfigError(f"secret on stdin is larger than {MAX_VALUE_FILE} bytes")
            return data
        return read_limited(from_file, "secret file", limit=MAX_VALUE_FILE, error=ConfigError)
    if from_env is not None:
        value = os.environ.get(from_env)
        if value is None:
            raise ConfigError(f"environment variable {from_env} is not set")
        return value.encode()
    return None


def _table(columns: list[str], rows: list[list[str]]) -> None:
    from rich.table import Table

    table = Table(*columns, show_edge=False, pad_edge=False)
    for row in rows:
        table.add_row(*row)
    out.print(table)


def _render_list(
    items: list[dict[str, Any]],
    json_output: bool,
    columns: list[str],
    row: Callable[[dict[str, Any]], list[str]],
) -> None:
    """A listing: the server's items as JSON, or one table row per item."""
    if json_output:
        emit_json(items)
    else:
        _table(columns, [row(i) for i in items])


def _render_removed(kind: str, name: str, json_output: bool) -> None:
    if json_output:
        emit_json({"ok": True, "name": name})
    else:
        out.print(f"{kind} {name} removed")


# -- secret value options (put, rotate) -----------------------------------------------------
FromFile = Annotated[
    Path | None, typer.Option("--from-file", help="Read the value from FILE ('-': stdin).")
]
FromEnv = Annotated[
    str | None, typer.Option("--from-env", help="Read the value from environment variable VAR.")
]
