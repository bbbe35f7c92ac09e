"""``sealpod kms audit``: show the audit log, verify it, and keep its head outside the KMS.

``--verify`` checks the chain here (hashes, links, head) and on the server (also every MAC and
the head row's MAC); ``--expect-head SEQ:HASH`` also requires the log to still contain a head
kept from before (a rollback of the whole database shows only this way). ``--checkpoint``
prints a checkpoint signed by the KMS (``-o FILE`` saves it with the KMS's public keys), and
``--verify-checkpoint FILE --jwks FILE`` checks one offline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from sealpod.cli._common import JsonOption, command, emit_json, err, out
from sealpod.cli.kms._shared import (
    CaOption,
    TokenFileOption,
    UrlOption,
    _admin,
    _read_text,
    _write_private,
    kms_app,
)
from sealpod.errors import ConfigError, KmsError

_MAX_JSON = 1024 * 1024


@command(kms_app, "audit")
def audit_cmd(
    verify: Annotated[
        bool, typer.Option("--verify", help="Check the hash chain (here and on the server).")
    ] = False,
    expect_head: Annotated[
        str | None,
        typer.Option(
            "--expect-head",
            metavar="SEQ:HASH",
            help="With --verify: the log must still contain this head (kept from before).",
        ),
    ] = None,
    checkpoint: Annotated[
        bool,
        typer.Option("--checkpoint", help="Verify, then print a head signed by the KMS."),
    ] = False,
    out_file: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="With --checkpoint: save it (and the KMS keys) here."),
    ] = None,
    verify_checkpoint: Annotated[
        Path | None,
        typer.Option("--verify-checkpoint", help="Check a saved checkpoint offline (no server)."),
    ] = None,
    jwks_file: Annotated[
        Path | None,
        typer.Option("--jwks", help="With --verify-checkpoint: the KMS keys you trust (JWKS)."),
    ] = None,
    after: Annotated[int, typer.Option("--after", min=0, help="Show records after SEQ.")] = 0,
    url: UrlOption = None,
    ca: CaOption = None,
    token_file: TokenFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show the audit log; with --verify, detect edited, removed, reordered or cut records."""
    from sealpod.kms.audit import parse_head

    if verify_checkpoint is not None:
        _verify_checkpoint_offline(verify_checkpoint, jwks_file, expect_head, json_output)
        return
    if out_file is not None and not checkpoint:
        raise ConfigError("--out saves a checkpoint: give --checkpoint too")
    expect = parse_head(expect_head) if expect_head is not None else None
    with _admin(url, ca, token_file) as client:
        if verify or checkpoint or expect is not None:
            local, server = client.audit_verify(expect=expect)
            jwks = client.jwks() if checkpoint else []
            _report_verify(local, server, json_output=json_output, checkpoint=checkpoint,
                           jwks=jwks, out_file=out_file)  # fmt: skip
            return
        records = list(client.audit_records(after=after))
    if json_output:
        emit_json([r.to_json() for r in records])
        return
    from sealpod.kms.state import iso

    for r in records:
        codes = r.details.get("codes")
        extra = f" codes={','.join(map(str, codes))}" if isinstance(codes, list) else ""
        out.print(
            f"{r.seq:>6} {iso(r.ts_ms)} {r.kind:<15} {r.outcome:<8} actor={r.actor} "
            f"subject={r.subject}{extra}",
            markup=False,
        )


def _report_verify(
    local: Any,
    server: dict[str, Any],
    *,
    json_output: bool,
    checkpoint: bool,
    jwks: list[dict[str, Any]],
    out_file: Path | None,
) -> None:
    from sealpod.kms.checkpoint import verify_checkpoint

    ok = local.ok and bool(server.get("ok"))
    signed = server.get("checkpoint")
    verified = None
    if ok and checkpoint:
        if not isinstance(signed, str):
            raise KmsError("the KMS sent no checkpoint for an intact chain")
        # Against the keys the server publishes: a sanity check here; the offline check
        # (--verify-checkpoint) is against keys the operator kept.
        verified = verify_checkpoint(signed, jwks)
        if out_file is not None:
            doc = {"checkpoint": signed, **verified.to_json(), "jwks": {"keys": jwks}}
            _write_private(out_file, (json.dumps(doc, indent=2) + "\n").encode())
    if json_output:
        emit_json(
            {
                "ok": ok,
                "head": f"{local.last_seq}:{local.last_hash.hex()}",
                "local": local.to_json(),
                "server": server,
                **({"checkpoint": verified.to_json()} if verified is not None else {}),
            }
        )
    else:
        for p in local.problems:
            err.print(f"  local: {p}", markup=False)
        for p in server.get("problems", []):
            err.print(f"  server: {p['code']} at seq {p['seq']}: {p['message']}", markup=False)
        verdict = "intact" if ok else "BROKEN"
        out.print(
            f"audit chain {verdict}: {local.records} records, MACs checked by the server: "
            f"{server.get('macs_checked')}\nhead {local.last_seq}:{local.last_hash.hex()}",
            markup=False,
        )
        if verified is not None:
            where = f" (saved to {out_file})" if out_file is not None else ""
            out.print(f"checkpoint {verified.head} signed by key {verified.kid}{where}:",
                      markup=False)  # fmt: skip
            out.print(signed, markup=False, soft_wrap=True)
    if not ok:
        if json_output:  # the report above is the one JSON document; the exit code says it
            raise typer.Exit(code=KmsError.exit_code)
        raise KmsError("the audit chain does not verify (see the problems above)")


def _verify_checkpoint_offline(
    path: Path, jwks_file: Path | None, expect_head: str | None, json_output: bool
) -> None:
    from sealpod.kms.audit import parse_head
    from sealpod.kms.checkpoint import verify_checkpoint

    if jwks_file is None:
        raise ConfigError(
            "--verify-checkpoint needs --jwks FILE: a copy of the KMS's /v1/jwks you trust "
            "(keys that travel with the checkpoint prove nothing about it)"
        )
    text = _read_text(path, "checkpoint", _MAX_JSON)
    if text.startswith("{"):
        doc = _json_object(text, "checkpoint file")
        text = str(doc.get("checkpoint", ""))
    keys = _json_object(_read_text(jwks_file, "JWKS", _MAX_JSON), "JWKS").get("keys")
    if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
        raise ConfigError(f"JWKS {jwks_file} has no 'keys' list of objects")
    verified = verify_checkpoint(text, keys)
    if expect_head is not None and parse_head(expect_head) != (verified.seq, verified.hash):
        raise KmsError(f"checkpoint head is {verified.head}, expected {expect_head}")
    if json_output:
        emit_json({"ok": True, "checkpoint": verified.to_json()})
    else:
        out.print(f"checkpoint valid: head {verified.head}, {verified.records} records, "
                  f"signed by key {verified.kid}", markup=False)  # fmt: skip


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{what} is not JSON") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{what} is not a JSON object")
    return data
