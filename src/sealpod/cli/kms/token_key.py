"""``sealpod kms rotate-token-key``: a new token-signing key on a running KMS (admin API)."""

from __future__ import annotations

from typing import Annotated

import typer

from sealpod.cli._common import JsonOption, command, emit_json, out
from sealpod.cli.kms._shared import CaOption, TokenFileOption, UrlOption, _admin, kms_app


@command(kms_app, "rotate-token-key")
def rotate_token_key_cmd(
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Rotate even though tokens signed by the key before the current one may "
            "still be valid (they stop verifying).",
        ),
    ] = False,
    url: UrlOption = None,
    ca: CaOption = None,
    token_file: TokenFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Replace the attestation-token signing key (admin). The current key keeps verifying the
    tokens it signed until the next rotation; other replicas pick the new key up within 30 s.
    Refused while the current key is younger than the longest token lifetime plus 30 s."""
    with _admin(url, ca, token_file) as client:
        done = client.rotate_token_key(force=force)
    if json_output:
        emit_json({"ok": True, **done})
        return
    out.print(
        f"token-signing key rotated: {done['previous_kid']} → {done['kid']} "
        f"(the previous key still verifies its tokens)"
    )
