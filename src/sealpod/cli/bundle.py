"""CLI commands for sealed bundles: ``init``, ``keygen``, ``build``, ``inspect``, ``verify-bundle``.

Rendering only: each command parses its options, calls :mod:`sealpod.spec` / :mod:`sealpod.build`
and prints. The clock is read here (the signing date), never in the library; set
``SOURCE_DATE_EPOCH`` for a reproducible ``signature.json``.
"""

from __future__ import annotations

import enum
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sealpod.cli._common import (
    JsonOption,
    byte_columns,
    command,
    emit_json,
    err,
    error_line,
    human_size,
    is_interactive,
    out,
    progress,
    shorten,
    status,
)
from sealpod.errors import BundleIntegrityError, ConfigError

if TYPE_CHECKING:  # the libraries are imported by the commands that use them (startup time)
    from rich.progress import Progress, TaskID

    from sealpod.build.bundle import Bundle
    from sealpod.build.manifest import Manifest


class KeyTypeName(enum.StrEnum):
    """The ``--type`` choices: :class:`sealpod.build.keys.KeyType`'s values, declared here so
    that registering the command does not import the key library (a unit test keeps the two
    equal)."""

    ED25519 = "ed25519"
    ECDSA_P384 = "ecdsa-p384"
    RSA_3072 = "rsa-3072"


PassphraseFileOption = Annotated[
    Path | None,
    typer.Option(
        "--passphrase-file",
        help="Read the key passphrase from this file (or set SEALPOD_KEY_PASSPHRASE).",
    ),
]
JobsOption = Annotated[
    int | None,
    typer.Option("--jobs", "-j", min=1, max=256, help="Hashing threads (default: CPUs)."),
]


# --- init ---------------------------------------------------------------------------------------
def init(
    directory: Annotated[
        Path, typer.Argument(help="Where to write sealpod.toml and rootfs/.")
    ] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing example.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Write a commented example sealpod.toml and a tiny sample rootfs."""
    from sealpod.spec.template import write_example

    written = write_example(directory, force=force)
    spec_path = directory / "sealpod.toml"
    if json_output:
        emit_json({"ok": True, "spec": str(spec_path), "written": [str(p) for p in written]})
        return
    out.print(f"Wrote {spec_path} and a sample rootfs in {directory / 'rootfs'}.")
    out.print(f"Next: sealpod build --spec {spec_path} --key author.pem -o bundle")


# --- keygen -------------------------------------------------------------------------------------
def keygen(
    output: Annotated[Path, typer.Option("--output", "-o", help="Private key file to write.")],
    key_type: Annotated[
        KeyTypeName, typer.Option("--type", help="Key type.")
    ] = KeyTypeName.ED25519,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    passphrase_file: PassphraseFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Generate an author key (private key PEM, mode 0600) and print its signer id."""
    from sealpod.build.keys import (
        KeyType,
        generate_key,
        private_key_pem,
        read_passphrase,
        signer_id,
        write_private_key,
    )

    kind = KeyType(key_type.value)
    passphrase = read_passphrase(passphrase_file, os.environ)
    if not force and (output.exists() or output.is_symlink()):
        raise ConfigError(f"{output} already exists; use --force to overwrite it")
    with _status(f"generating a {kind} key", json_output):
        key = generate_key(kind)
    write_private_key(output, private_key_pem(key, passphrase), force=force)
    signer = signer_id(key.public_key()).hex()
    if json_output:
        emit_json(
            {"ok": True, "path": str(output), "type": str(kind), "signer_id": signer,
             "encrypted": passphrase is not None}
        )  # fmt: skip
        return
    protection = "passphrase-protected" if passphrase else "unencrypted"
    out.print(f"Wrote {kind} author key {output} (mode 0600, {protection}).")
    out.print(f"signer id: {signer}")


# --- build --------------------------------------------------------------------------------------
def build(
    key: Annotated[Path, typer.Option("--key", "-k", help="Author private key (PEM).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Bundle directory to create.")],
    spec: Annotated[Path, typer.Option("--spec", "-s", help="Pod spec.")] = Path("sealpod.toml"),
    oci: Annotated[
        bool, typer.Option("--oci", help="Also write an OCI image layout to OUTPUT.oci.")
    ] = False,
    passphrase_file: PassphraseFileOption = None,
    jobs: JobsOption = None,
    json_output: JsonOption = False,
) -> None:
    """Build, measure and sign a bundle from a pod spec."""
    from sealpod.build.bundle import build_bundle
    from sealpod.build.keys import load_private_key, read_passphrase
    from sealpod.spec.load import image_source, load_spec

    pod = load_spec(spec)
    author = load_private_key(key, read_passphrase(passphrase_file, os.environ))
    oci_dir = output.with_name(output.name + ".oci") if oci else None
    if oci_dir is not None and oci_dir.exists():
        raise ConfigError(f"{oci_dir} already exists; remove it or choose another output")
    started = time.perf_counter()
    with _progress(json_output) as bar:
        bundle = build_bundle(
            pod,
            image=image_source(pod, spec),
            key=author,
            out=output,
            signed_at=_signing_time(),
            workers=jobs,
            progress=bar,
        )
    elapsed = time.perf_counter() - started
    oci_digest = _write_oci(bundle, oci_dir) if oci_dir is not None else None
    if json_output:
        emit_json(
            {**_summary(bundle), "ok": True, "seconds": round(elapsed, 3),
             "oci": None if oci_dir is None else {"path": str(oci_dir), "digest": oci_digest}}
        )  # fmt: skip
        return
    out.print(f"Built bundle {output} in {elapsed:.2f} s")
    _print_identity(bundle)
    if oci_dir is not None:
        out.print(f"  OCI layout   {oci_dir} ({oci_digest})")


def _write_oci(bundle: Bundle, oci_dir: Path) -> str:
    from sealpod.build.oci import write_oci_layout  # the IMAGE part; only needed with --oci

    annotations = {
        "org.sealpod.measurement": bundle.measurement.hex(),
        "org.sealpod.signer": bundle.signer_id.hex(),
    }
    return write_oci_layout(bundle.path, oci_dir, annotations=annotations)


def _signing_time() -> datetime:
    """Now, or ``SOURCE_DATE_EPOCH`` (reproducible-builds.org) when set."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is None:
        return datetime.now(UTC)
    if not re.fullmatch(r"[0-9]{1,12}", epoch):
        raise ConfigError(f"SOURCE_DATE_EPOCH is {epoch!r}, expected seconds since 1970")
    return datetime.fromtimestamp(int(epoch), UTC)


# --- inspect ------------------------------------------------------------------------------------
def inspect_cmd(
    bundle_dir: Annotated[Path, typer.Argument(metavar="BUNDLE", help="Bundle directory.")],
    json_output: JsonOption = False,
) -> None:
    """Show a bundle's identity and contents (its signature is checked, files are not)."""
    from sealpod.build.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    m = bundle.manifest
    if json_output:
        emit_json(
            {**_summary(bundle), "ok": True, "algorithm": str(bundle.signature.algorithm),
             "process": m.process.model_dump(mode="json"),
             "files": [f.model_dump(mode="json") for f in m.files],
             "volumes": [v.model_dump(mode="json") for v in m.volumes],
             "tee": m.tee.model_dump(mode="json"),
             "kms": None if m.kms is None else m.kms.model_dump(mode="json"),
             "trusted_paths": m.trusted.paths}
        )  # fmt: skip
        return
    out.print(f"Bundle {bundle_dir} (signature valid; run verify-bundle to re-hash its files)")
    _print_identity(bundle)
    out.print(f"  signed       {bundle.signature.signed_at} ({bundle.signature.algorithm})")
    _print_manifest(m)


def _print_identity(bundle: Bundle) -> None:
    m = bundle.manifest
    out.print(f"  measurement  {bundle.measurement.hex()}")
    out.print(f"  signer id    {bundle.signer_id.hex()}")
    out.print(f"  product id   {m.identity.product_id}    svn {m.identity.svn}")
    out.print(f"  files        {m.file_count} ({human_size(m.total_size)})")


def _print_manifest(m: Manifest) -> None:
    from sealpod.spec.model import SecretRef

    p = m.process
    out.print(f"  process      {' '.join([p.entrypoint, *p.args])}", markup=False)
    out.print(f"  workdir      {p.workdir}    user {p.user}", markup=False)
    for name, value in sorted(p.env.items()):
        shown = f"<secret {value.secret}>" if isinstance(value, SecretRef) else repr(value)
        out.print(f"  env          {name}={shown}", markup=False)
    for f in m.files:
        out.print(f"  secret file  {f.path} <- {f.secret} (mode {f.mode:04o})", markup=False)
    for v in m.volumes:
        out.print(f"  volume       {v.path} <- {v.name}", markup=False)
    tee = m.tee
    out.print(
        f"  tee          {', '.join(tee.backends)}; memory {human_size(tee.memory_bytes)}, "
        f"{tee.threads} threads{', DEBUG' if tee.debug else ''}"
    )
    if m.kms is not None:
        out.print(f"  kms          {m.kms.url} (identity {m.kms.identity or 'not pinned'})")
    out.print(f"  trusted      {', '.join(m.trusted.paths)}", markup=False)


def _summary(bundle: Bundle) -> dict[str, object]:
    m = bundle.manifest
    return {
        "path": str(bundle.path),
        "measurement": bundle.measurement.hex(),
        "signer_id": bundle.signer_id.hex(),
        "signed_at": bundle.signature.signed_at,
        "product_id": m.identity.product_id,
        "svn": m.identity.svn,
        "file_count": m.file_count,
        "total_size": m.total_size,
    }


# --- verify-bundle ------------------------------------------------------------------------------
def verify_bundle_cmd(
    bundle_dir: Annotated[Path, typer.Argument(metavar="BUNDLE", help="Bundle directory.")],
    signer: Annotated[
        str | None, typer.Option("--signer", help="Require this signer id (64 hex digits).")
    ] = None,
    jobs: JobsOption = None,
    json_output: JsonOption = False,
) -> None:
    """Re-hash every trusted file and check the signature; list every difference."""
    from sealpod.build.bundle import verify_bundle

    pinned = _parse_signer(signer) if signer is not None else None
    try:
        with _progress(json_output) as bar:
            report = verify_bundle(bundle_dir, signer=pinned, workers=jobs, progress=bar)
    except BundleIntegrityError as exc:
        _report_differences(exc, json_output)
        raise typer.Exit(exc.exit_code) from None
    if json_output:
        emit_json(report.to_dict())
        return
    out.print(f"OK: {bundle_dir} matches its manifest and signature")
    out.print(f"  measurement  {report.measurement.hex()}")
    out.print(f"  signer id    {report.signer_id.hex()}{' (as required)' if pinned else ''}")
    out.print(f"  checked      {report.entries_checked} entries, {human_size(report.total_size)}")


def _parse_signer(text: str) -> bytes:
    if not re.fullmatch(r"[0-9a-fA-F]{64}", text):
        raise ConfigError(f"--signer is {shorten(text)!r}, expected 64 hex digits (a signer id)")
    return bytes.fromhex(text)


def _report_differences(exc: BundleIntegrityError, json_output: bool) -> None:
    diffs = [d for d in exc.differences if hasattr(d, "to_dict")]
    if json_output:
        emit_json(
            {"ok": False, "error": exc.to_dict(),
             "differences": [d.to_dict() for d in diffs]}
        )  # fmt: skip
        return
    if not diffs:  # a malformed manifest: no per-file list
        err.print(error_line(exc.code, exc.message))
        return
    err.print(error_line(exc.code, f"{len(diffs)} difference(s) from the manifest"))
    for d in diffs:
        err.print(f"  {d}", markup=False)


# --- shared rendering ---------------------------------------------------------------------------
class _RichSink:
    """Adapts a rich progress bar to :class:`sealpod.build.hashing.Progress` (thread-safe:
    rich's Progress takes a lock on every update)."""

    def __init__(self, bar: Progress) -> None:
        self._bar = bar
        self._task: TaskID | None = None

    def start(self, total_bytes: int, label: str) -> None:
        self._task = self._bar.add_task(label, total=total_bytes)

    def advance(self, amount: int) -> None:
        if self._task is not None:
            self._bar.advance(self._task, amount)


@contextmanager
def _progress(json_output: bool) -> Iterator[_RichSink | None]:
    """A progress bar on stderr when it is a terminal and the output is not JSON."""
    if not is_interactive(json_output):
        yield None
        return
    with progress(*byte_columns()) as bar:
        yield _RichSink(bar)


@contextmanager
def _status(text: str, json_output: bool) -> Iterator[None]:
    if not is_interactive(json_output):
        yield
        return
    with status(text):
        yield


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    command(app, "init")(init)
    command(app, "keygen")(keygen)
    command(app, "build")(build)
    command(app, "inspect")(inspect_cmd)
    command(app, "verify-bundle")(verify_bundle_cmd)
