"""The ``sealpod`` command: one root app, command groups registered by their modules."""

from __future__ import annotations

import sys
import traceback
from typing import Annotated

import typer

from sealpod import __version__
from sealpod.cli import _common, bundle, gramine, image, kms, kube, ratls, run, tee, verify, volume
from sealpod.cli import catalog as catalog_cli  # sealpod catalog (docs/catalog.md)

app = typer.Typer(
    name="sealpod",
    help="Confidential compute containers: build, sign, attest, provision and run sealed pods.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sealpod {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print version.")
    ] = False,
) -> None:
    _common.STATE["debug"] = debug


for _module in (bundle, verify, tee, kms, volume, run):
    _module.register(app)
for _module in (gramine, ratls, image, kube):  # SGX/RA-TLS, deployment
    _module.register(app)
catalog_cli.register(app)


def main() -> None:
    """Console entry point: never shows a traceback unless ``--debug`` was given.

    Click runs in non-standalone mode so that a usage error (an unknown option, a value not
    among an option's choices) is rendered by us: in ``--json`` mode as the same JSON error
    document every other refusal prints, exit 2 (the ``config`` family).
    """
    try:
        code = app(standalone_mode=False)
    except KeyboardInterrupt:
        _common.err.print("interrupted")
        sys.exit(_common.EXIT_INTERRUPTED)
    except Exception as exc:  # the last line of defence: no tracebacks for users
        if _common.is_usage_error(exc):
            _common.report_usage_error(exc, json_mode="--json" in sys.argv[1:])
            sys.exit(getattr(exc, "exit_code", 2))
        if type(exc).__name__ == "Abort":  # click's: end of input at a prompt
            _common.err.print("aborted")
            sys.exit(1)
        if _common.STATE["debug"]:
            traceback.print_exc()
        else:
            _common.err.print(
                f"internal error: {type(exc).__name__} (run 'sealpod --debug ...' for details)",
                markup=False,
            )
        sys.exit(_common.EXIT_INTERNAL)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
