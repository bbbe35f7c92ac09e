"""Shared CLI plumbing: uniform error rendering, ``--json`` output, exit codes, progress.

Commands parse arguments, call the library and render; they hold no logic of their own. Each
error family maps to one exit code (see :mod:`sealpod.errors`); a traceback appears only with
``sealpod --debug``.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from sealpod.errors import SealpodError

P = ParamSpec("P")
R = TypeVar("R")

#: Process-wide CLI switches set by the root callback.
STATE: dict[str, bool] = {"debug": False}

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]

EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


def shorten(text: str, keep: int = 80) -> str:
    """``text`` cut to ``keep`` characters for an error message: an argument can be huge."""
    return text if len(text) <= keep else f"{text[:keep]}... ({len(text)} characters)"


def emit_json(obj: object) -> None:
    """Print ``obj`` as JSON on stdout (sorted keys, so output is stable)."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def report_error(exc: SealpodError, json_mode: bool) -> None:
    """Render a sealpod error: JSON on stdout in ``--json`` mode, plain words on stderr."""
    if json_mode:
        emit_json({"ok": False, "error": exc.to_dict()})
        return
    # The message quotes user and KMS text (paths, names): never parsed as markup.
    err.print(f"[bold red]error[/] [dim]({exc.code})[/]: {escape(exc.message)}", markup=True)
    details = exc.to_dict()
    for key in ("step", "field", "offset", "expected", "actual"):
        if details.get(key) is not None:
            err.print(f"  {key}: {details[key]}", markup=False)
    violations = details.get("violations")
    if isinstance(violations, list):
        for v in violations:
            err.print(f"  - {v}", markup=False)


def command(
    app: typer.Typer, name: str | None = None, **kwargs: Any
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Register ``fn`` as a command of ``app`` with sealpod's error handling.

    A :class:`SealpodError` becomes its family's exit code; the ``json_output`` parameter (the
    ``--json`` option), if the command has one, selects JSON error output.
    """

    def deco(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kw: P.kwargs) -> R:
            json_mode = bool(kw.get("json_output", False))
            try:
                return fn(*args, **kw)
            except SealpodError as exc:
                if STATE["debug"]:
                    raise
                report_error(exc, json_mode)
                raise typer.Exit(exc.exit_code) from None

        app.command(name, **kwargs)(wrapper)
        return fn

    return deco


def is_interactive(json_mode: bool) -> bool:
    """Progress bars only on a terminal and never in JSON mode."""
    return (not json_mode) and sys.stderr.isatty()
