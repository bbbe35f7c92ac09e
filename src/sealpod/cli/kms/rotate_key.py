"""``sealpod kms rotate-key token-signing|ca``: a new token-signing key or workload CA on a
running KMS (admin API)."""

from __future__ import annotations

from typing import Annotated

import typer

from sealpod.cli._common import JsonOption, command, emit_json, out
from sealpod.cli.kms._shared import CaOption, TokenFileOption, UrlOption, _admin, kms_app
from sealpod.errors import ConfigError

KEYS = {
    "token-signing": "tokens it signed stay valid until they expire",
    "ca": "it stays in the trust bundle (/v1/ca and each issued certificate's ca)",
}


@command(kms_app, "rotate-key")
def rotate_key_cmd(
    key: Annotated[str, typer.Argument(help="token-signing or ca.")],
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Rotate even though what the previous key signed may still be valid (it stops "
            "being trusted).",
        ),
    ] = False,
    url: UrlOption = None,
    ca: CaOption = None,
    token_file: TokenFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Replace the attestation-token signing key or the workload CA (admin). The current one
    becomes the previous one, still trusted until the next rotation; other replicas pick the
    new one up within 30 s. A second rotation is refused while what the previous key signed may
    still be valid (tokens: the longest token lifetime; certificates: the longest validity of
    the tls-cert secrets), unless --force."""
    if key not in KEYS:
        raise ConfigError(f"key is {key!r}, expected {' or '.join(KEYS)}")
    with _admin(url, ca, token_file) as client:
        done = client.rotate_key(key, force=force)
    if json_output:
        emit_json({"ok": True, **done})
        return
    out.print(
        f"{key} rotated: {str(done['previous_id'])[:16]} → {str(done['id'])[:16]} "
        f"(the previous one: {KEYS[key]})"
    )
