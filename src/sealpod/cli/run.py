"""``sealpod run``: start a sealed pod in the foreground, as a container entrypoint does.

Rendering only: the phases live in :mod:`sealpod.runtime`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from sealpod.cli._common import EXIT_INTERRUPTED, STATE, emit_json, report_error
from sealpod.errors import SealpodError
from sealpod.runtime.events import Reporter
from sealpod.runtime.plan import Emulate, Network, RunOptions, SandboxKind, TeeChoice

RUN_HELP = """Run a sealed pod: verify the bundle, attest to the KMS, receive the pod's secrets,
mount its encrypted volumes and start it in a sandbox. The workload's output passes through;
SIGTERM, SIGINT and SIGHUP are forwarded to it and its exit status is returned (128+n for
signal n). Arguments after `--` are appended to the workload's argv only if the spec sets
[runtime] insecure__use_cmdline_argv = true."""


def register(app: typer.Typer) -> None:
    """Add ``sealpod run`` to the root app."""
    app.command(
        "run",
        help=RUN_HELP,
        context_settings={"allow_extra_args": False},
    )(run_cmd)


def run_cmd(
    bundle: Annotated[Path, typer.Argument(help="The sealed bundle directory.")],
    host_args: Annotated[
        list[str] | None,
        typer.Argument(
            help="Extra workload arguments (after --); refused unless the spec opts in."
        ),
    ] = None,
    tee: Annotated[
        TeeChoice,
        typer.Option("--tee", help="Evidence backend: auto (hardware only), sim (NO protection)."),
    ] = TeeChoice.auto,
    emulate: Annotated[
        Emulate, typer.Option("--emulate", help="--tee sim only: the evidence format.")
    ] = Emulate.sgx,
    kms: Annotated[
        str | None,
        typer.Option(
            "--kms", help="KMS URL (default: the spec's [kms] url, else $SEALPOD_KMS_URL)."
        ),
    ] = None,
    kms_identity: Annotated[
        str | None,
        typer.Option(
            "--kms-identity",
            help="SHA-256 (hex) of the KMS's TLS public key (must equal the spec's pin).",
        ),
    ] = None,
    unsafe_any_kms: Annotated[
        bool,
        typer.Option("--unsafe-any-kms", help="Trust whatever KMS answers at the URL (no pin)."),
    ] = False,
    kms_ca: Annotated[
        Path | None,
        typer.Option(
            "--kms-ca", help="PEM CA to verify an unpinned KMS with (with --unsafe-any-kms)."
        ),
    ] = None,
    signer: Annotated[
        str | None,
        typer.Option("--signer", help="The author key id (hex) the bundle must be signed by."),
    ] = None,
    unsafe_any_signer: Annotated[
        bool,
        typer.Option("--unsafe-any-signer", help="Run a bundle whatever key signed it."),
    ] = False,
    network: Annotated[
        Network, typer.Option("--network", help="none: loopback only; host: the host's network.")
    ] = Network.none,
    sandbox: Annotated[
        SandboxKind,
        typer.Option("--sandbox", help="bwrap: isolated; none: layout only, NO isolation."),
    ] = SandboxKind.bwrap,
    volume_dir: Annotated[
        Path | None,
        typer.Option(
            "--volume-dir", help="Where volumes' ciphertext lives (default: $SEALPOD_HOME/volumes)."
        ),
    ] = None,
    ready_timeout: Annotated[
        float,
        typer.Option(
            "--ready-timeout", help="Seconds to wait for the spec's ready_tcp port.", min=0.1
        ),
    ] = 120.0,
    json_output: Annotated[
        bool, typer.Option("--json", help="Phase events as JSON lines on stderr.")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Verify and print the resolved plan, then stop."),
    ] = False,
) -> None:
    from sealpod.runtime.run import run_pod

    events = Reporter(json_lines=json_output)
    try:
        options = RunOptions(
            bundle=bundle, tee=tee, emulate=emulate.value, kms_url=kms,
            kms_identity=kms_identity, unsafe_any_kms=unsafe_any_kms, kms_ca=kms_ca,
            signer=signer, unsafe_any_signer=unsafe_any_signer, network=network,
            sandbox=sandbox, volume_dir=volume_dir, host_args=tuple(host_args or ()),
            ready_timeout_secs=ready_timeout,
        )  # fmt: skip
        if dry_run:
            _dry_run(options, events, json_output)
            return
        code = run_pod(options, events)
    except SealpodError as exc:
        if STATE["debug"]:
            raise
        render_error(exc, json_output, events)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        events.emit("exit", code=EXIT_INTERRUPTED, interrupted=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    raise typer.Exit(code)


def render_error(exc: SealpodError, json_output: bool, events: Reporter | None = None) -> None:
    """A refusal of ``sealpod run``: an ``error`` event with ``--json``, else plain words."""
    if json_output:
        (events or Reporter(json_lines=True)).emit(
            "error", **exc.to_dict(), exit_code=exc.exit_code
        )
    else:
        report_error(exc, False)


def _dry_run(options: RunOptions, events: Reporter, json_output: bool) -> None:
    from sealpod.runtime.run import prepare

    prepared = prepare(options, events)
    plan = {
        **prepared.plan.describe(),
        "kms": prepared.target.describe(),
        "sandbox_argv": prepared.argv,
    }
    if json_output:
        emit_json(plan)
        return
    sys.stdout.write(json.dumps(plan, indent=2) + "\n")
