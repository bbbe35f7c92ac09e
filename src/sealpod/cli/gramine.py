"""``sealpod gramine``: SGX through Gramine — manifest, sign, SIGSTRUCT, manifest check.

Rendering only: :mod:`sealpod.gramine.pipeline` writes and signs, :mod:`sealpod.gramine.sigstruct`
parses and verifies, :mod:`sealpod.gramine.manifest_check` checks. See docs/sgx.md.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated

import typer

from sealpod._files import read_limited
from sealpod.cli._common import JsonOption, command, emit_json, out
from sealpod.cli.bundle import PassphraseFileOption
from sealpod.errors import ConfigError, SpecError

DEFAULT_PREMAIN_DIR = "/opt/sealpod/premain"
DEFAULT_VOLUME_DIR = "/var/lib/sealpod/gramine-volumes"
MAX_MANIFEST_FILE = 64 << 20


def manifest_cmd(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory.")],
    output: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output directory (default: BUNDLE/gramine)."),
    ] = None,
    signer: Annotated[
        str | None, typer.Option("--signer", help="Expected bundle signer id (hex).")
    ] = None,
    host_bundle_dir: Annotated[
        str | None,
        typer.Option("--host-bundle-dir", help="Where the bundle lives on the SGX host."),
    ] = None,
    premain_dir: Annotated[
        str, typer.Option("--premain-dir", help="sealpod's pre-main directory on the SGX host.")
    ] = DEFAULT_PREMAIN_DIR,
    volume_dir: Annotated[
        str, typer.Option("--volume-dir", help="Encrypted volume directory on the SGX host.")
    ] = DEFAULT_VOLUME_DIR,
    json_output: JsonOption = False,
) -> None:
    """Write a Gramine (>= 1.6) manifest for a bundle (checked before it is written)."""
    from sealpod.gramine.pipeline import write_manifest

    expected = _signer(signer)
    result = write_manifest(
        bundle,
        output if output is not None else bundle / "gramine",
        premain_dir=premain_dir,
        volume_dir=volume_dir,
        host_bundle_dir=host_bundle_dir,
        signer=expected,
    )
    if json_output:
        emit_json({"ok": True, **result.to_dict()})
        return
    out.print(f"Wrote {result.path}", markup=False)
    out.print(f"  bundle measurement  {result.measurement.hex()}", markup=False)
    out.print(f"  trusted files       {result.trusted_files}", markup=False)
    out.print(f"  encrypted mounts    {result.volumes}", markup=False)
    out.print("Next, on a machine with Gramine: sealpod gramine sign DIR --key author.pem")


def _signer(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != 32:
        raise ConfigError("--signer must be 64 hex digits (the bundle's signer id)")
    return value


def sign_cmd(
    directory: Annotated[Path, typer.Argument(help="Directory written by `gramine manifest`.")],
    key: Annotated[Path, typer.Option("--key", "-k", help="RSA-3072 (e=3) author key.")],
    date: Annotated[
        str | None, typer.Option("--date", help="SIGSTRUCT date YYYY-MM-DD (reproducible).")
    ] = None,
    bundle: Annotated[
        Path | None,
        typer.Option("--bundle", help="The bundle (default: DIR/..): its secrets go in [release]."),
    ] = None,
    passphrase_file: PassphraseFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Sign the enclave with gramine-sgx-sign and record MRENCLAVE/MRSIGNER and a policy."""
    from sealpod.build.bundle import MANIFEST_NAME, load_bundle
    from sealpod.build.keys import load_private_key, read_passphrase
    from sealpod.gramine.pipeline import IDENTITY_FILE, POLICY_FILE, bundle_secret_names, sign

    author = load_private_key(key, read_passphrase(passphrase_file, os.environ))
    if bundle is None and (directory.parent / MANIFEST_NAME).is_file():
        bundle = directory.parent
    secrets = bundle_secret_names(load_bundle(bundle).manifest) if bundle is not None else None
    sig = sign(directory, author, date=date, secrets=secrets)
    if json_output:
        emit_json({"ok": True, **sig.to_json(), "policy": str(directory / POLICY_FILE)})
        return
    _print_sig(sig.to_json(), verified=True)
    out.print(f"Recorded {directory / IDENTITY_FILE} and {directory / POLICY_FILE}", markup=False)
    out.print(f"Pin it: sealpod kms policy put NAME {directory / POLICY_FILE}", markup=False)


def sigstruct_cmd(
    file: Annotated[Path, typer.Argument(help="A .sig file (SGX SIGSTRUCT, 1808 bytes).")],
    json_output: JsonOption = False,
) -> None:
    """Show a SIGSTRUCT's MRENCLAVE, MRSIGNER, product id and svn; verify its signature."""
    from sealpod.errors import EvidenceSignatureError
    from sealpod.gramine.pipeline import load_sigstruct
    from sealpod.gramine.sigstruct import verify_sigstruct

    sig = load_sigstruct(file)
    error: EvidenceSignatureError | None = None
    try:
        verify_sigstruct(sig)
    except EvidenceSignatureError as exc:
        error = exc
    if json_output:
        doc: dict[str, object] = {"ok": error is None, "signature_valid": error is None}
        doc.update(sig.to_json())
        if error is not None:
            doc["error"] = error.to_dict()
        emit_json(doc)
    else:
        _print_sig(sig.to_json(), verified=error is None)
        if error is not None:
            out.print(f"  signature  INVALID: {error.message}", markup=False)
    if error is not None:
        raise typer.Exit(error.exit_code)


def _print_sig(doc: dict[str, object], *, verified: bool) -> None:
    rows = [("mr_enclave", doc["mr_enclave"]), ("mr_signer", doc["mr_signer"]),
            ("isv_prod_id", doc["isv_prod_id"]), ("isv_svn", doc["isv_svn"]),
            ("debug", doc["debug"]), ("date", doc["date"]),
            ("signature", "valid (RSA-3072, e=3)" if verified else "INVALID")]  # fmt: skip
    for name, value in rows:
        out.print(f"  {name.ljust(12)} {value}", markup=False)


def check_cmd(
    manifest: Annotated[Path, typer.Argument(help="A Gramine manifest (TOML).")],
    debug_ok: Annotated[
        bool, typer.Option("--allow-insecure", help="Do not refuse insecure__/debug__ options.")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Check a Gramine manifest's key names and types against Gramine's documented syntax."""
    from sealpod.gramine.manifest_check import check_manifest

    raw = read_limited(manifest, "manifest", limit=MAX_MANIFEST_FILE, error=ConfigError)
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SpecError(f"{manifest} is not valid TOML: {exc}") from exc
    problems = check_manifest(doc, production=not debug_ok)
    if json_output:
        report: dict[str, object] = {"ok": not problems, "problems": problems}
        if problems:
            report["error"] = {"code": SpecError.code, "message": f"{len(problems)} problem(s)"}
        emit_json(report)
    elif problems:
        out.print(f"{manifest}: {len(problems)} problem(s)", markup=False)
        for p in problems:
            out.print(f"  - {p}", markup=False)
    else:
        out.print(f"{manifest}: OK", markup=False)
    if problems:
        raise typer.Exit(SpecError.exit_code)


def register(app: typer.Typer) -> None:
    """Add ``gramine manifest|sign|sigstruct|check`` to the root app."""
    gramine_app = typer.Typer(
        name="gramine", help="Intel SGX through Gramine: manifest, sign, SIGSTRUCT.",
        no_args_is_help=True,
    )  # fmt: skip
    command(gramine_app, "manifest")(manifest_cmd)
    command(gramine_app, "sign")(sign_cmd)
    command(gramine_app, "sigstruct")(sigstruct_cmd)
    command(gramine_app, "check")(check_cmd)
    app.add_typer(gramine_app)
