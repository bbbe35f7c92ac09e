"""``sealpod kms policy``: put, list, get, rm, test."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Annotated

import typer

from sealpod._files import read_limited
from sealpod.cli._common import JsonOption, command, emit_json, out
from sealpod.cli.kms._shared import (
    CaOption,
    TokenFileOption,
    UrlOption,
    _admin,
    _read_text,
    _render_list,
    _render_removed,
    policy_app,
)
from sealpod.errors import ConfigError


@command(policy_app, "put")
def policy_put(
    name: str,
    file: Annotated[Path, typer.Argument(help="Policy TOML (or .json) with a [release] table.")],
    url: UrlOption = None,
    ca: CaOption = None,
    token_file: TokenFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Create or replace a release policy (checked here first, as `kms policy check` does)."""
    from sealpod.kms.release import parse_release_policy

    text = _read_text(file, "policy", 256 * 1024)
    fmt = "json" if file.suffix.lower() == ".json" else "toml"
    parse_release_policy(name, text, fmt)  # a bad file is refused before the server is asked
    with _admin(url, ca, token_file) as client:
        info = client.put_policy(name, text, fmt=fmt)
    if json_output:
        emit_json({"ok": True, **info})
    else:
        out.print(f"policy {name} stored; releases: {', '.join(info['secrets'])}")


@command(policy_app, "check")
def policy_check(
    file: Annotated[Path, typer.Argument(help="Policy TOML (or .json) with a [release] table.")],
    evidence: Annotated[
        Path | None,
        typer.Option(
            "--evidence", help="Evidence file: say what it would be released, or why not."
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Offline: check a release policy file, and with --evidence what it would release and why not.

    No KMS is asked. The evidence is verified as `sealpod verify` does (the local simulated
    platform is trusted if there is one); the nonce binding only the KMS can check is not.
    """
    from datetime import UTC, datetime

    from sealpod.cli.verify import local_trust
    from sealpod.evidence.envelope import load_evidence
    from sealpod.kms.release import evaluate_release, parse_release_policy
    from sealpod.verify.appraise import appraise

    text = _read_text(file, "policy", 256 * 1024)
    fmt = "json" if file.suffix.lower() == ".json" else "toml"
    rp = parse_release_policy(file.stem, text, fmt)
    report: dict[str, object] = {
        "ok": True,
        "policy": str(file),
        "secrets": list(rp.release.secrets),
        "token_ttl_secs": rp.release.token_ttl_secs,
    }
    if evidence is None:
        if json_output:
            emit_json(report)
        else:
            out.print(f"{file}: valid; releases {', '.join(rp.release.secrets)}")
        return
    now = datetime.now(UTC)
    loaded = load_evidence(read_limited(evidence, "evidence", limit=1024 * 1024, error=ConfigError))
    trust, collateral = local_trust(now, required=False)
    claims = appraise(loaded, trust=trust, dcap_collateral=collateral, now=now)
    findings = evaluate_release(rp, claims, workload=None)
    report |= {
        "matched": not findings,
        "would_release": [] if findings else list(rp.release.secrets),
        "violations": [f.model_dump() for f in findings],
        "claims": claims.to_json(),
    }
    if json_output:
        emit_json(report)
    elif not findings:
        out.print(f"{file}: this evidence would receive {', '.join(rp.release.secrets)}")
    else:
        out.print(f"{file}: this evidence would receive nothing:")
        for f in findings:
            detail = "" if f.expected is None else f" (expected {f.expected}, actual {f.actual})"
            out.print(f"  - {f.code}: {f.message}{detail}")
    if findings:
        raise typer.Exit(13)


@command(policy_app, "list")
def policy_list(
    url: UrlOption = None,
    ca: CaOption = None,
    token_file: TokenFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """List release policies."""
    with _admin(url, ca, token_file) as client:
        items = client.list_policies()
    _render_list(
        items,
        json_output,
        ["name", "secrets", "token ttl", "updated"],
        lambda i: [i["name"], ", ".join(i["secrets"]), f"{i['token_ttl_secs']}s", i["updated_at"]],
    )


@command(policy_app, "get")
def policy_get(
    name: str,
    url: UrlOption = None,
    ca: CaOption = None,
    token_file: TokenFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show a release policy."""
    with _admin(url, ca, token_file) as client:
        info = client.get_policy(name)
    if json_output:
        emit_json(info)
    else:
        out.print(json.dumps(info["document"], indent=2, sort_keys=True), markup=False)


@command(policy_app, "rm")
def policy_rm(
    name: str,
    url: UrlOption = None,
    ca: CaOption = None,
    token_file: TokenFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Delete a release policy."""
    with _admin(url, ca, token_file) as client:
        client.remove_policy(name)
    _render_removed("policy", name, json_output)


@command(policy_app, "test")
def policy_test(
    name: str,
    evidence: Annotated[Path, typer.Option("--evidence", help="Evidence file (any encoding).")],
    url: UrlOption = None,
    ca: CaOption = None,
    token_file: TokenFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Dry run: every violation of policy NAME by this evidence (no secret is released)."""
    from sealpod.evidence.envelope import EvidenceEnvelope, load_evidence

    data = read_limited(evidence, "evidence", limit=1024 * 1024, error=ConfigError)
    loaded = load_evidence(data)
    if isinstance(loaded, EvidenceEnvelope):
        envelope = json.loads(loaded.to_json())
    else:
        envelope = {"tee": loaded.tee.value, "evidence": base64.b64encode(loaded.raw).decode()}
    with _admin(url, ca, token_file) as client:
        result = client.test_policy(name, envelope)
    if json_output:
        emit_json(result)
    elif result["matched"]:
        out.print(f"policy {name}: MATCH (the workload would receive its secrets)")
    else:
        out.print(f"policy {name}: NO MATCH")
        for v in result["violations"]:
            detail = ""
            if v.get("expected") is not None or v.get("actual") is not None:
                detail = f" (expected {v.get('expected')}, actual {v.get('actual')})"
            out.print(f"  - {v['code']}: {v['message']}{detail}", markup=False)
    if not result["matched"]:
        raise typer.Exit(13)
