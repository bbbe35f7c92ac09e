"""Shared CLI plumbing: uniform error rendering, ``--json`` output, exit codes, progress.

Commands parse arguments, call the library and render; they hold no logic of their own. Each
error family maps to one exit code (see :mod:`sealpod.errors`); a traceback appears only with
``sealpod --debug``.

Text is never parsed as rich markup: ``out`` and ``err`` are created with markup and emoji codes
off, so a path like ``[/x]`` or a message quoting a ``[release]`` table prints as it is. Our own
styling is built as :class:`rich.text.Text` with :func:`styled` (style spans, no parsing), and
progress bars and spinners get their labels through :func:`progress` and :func:`status`, which
switch markup off where rich would otherwise parse. A test walks src/sealpod/cli for any other
route (``markup=True``, markup tags, a second ``Console``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from sealpod.errors import SealpodError
from sealpod.tee.names import EmulatedTee

if TYPE_CHECKING:
    from rich.progress import Progress, ProgressColumn

P = ParamSpec("P")
R = TypeVar("R")

#: Process-wide CLI switches set by the root callback.
STATE: dict[str, bool] = {"debug": False}

_CONSOLE = {"highlight": False, "soft_wrap": True, "markup": False, "emoji": False}
out = Console(**_CONSOLE)  # type: ignore[arg-type]
err = Console(stderr=True, **_CONSOLE)  # type: ignore[arg-type]


def reopen_consoles() -> None:
    """Make ``out`` and ``err`` look at the process's stdout and stderr afresh (terminal or
    not, width, colours): a pod forked by the agent got the client's, not the agent's. In
    place, so that modules holding the objects see the change."""
    out.__init__(**_CONSOLE)  # type: ignore[misc]
    err.__init__(stderr=True, **_CONSOLE)  # type: ignore[misc]


JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def tee_option(help_text: str) -> Any:
    """The one ``--tee auto|sim|sgx|snp|tdx`` option; annotate it as ``TeeName``."""
    return typer.Option("--tee", help=help_text, show_default=True)


EmulateOption = Annotated[
    EmulatedTee | None,
    typer.Option(
        "--emulate",
        help="With --tee sim: the hardware format the simulated TEE imitates (default sgx).",
    ),
]

EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


def shorten(text: str, keep: int = 80) -> str:
    """``text`` cut to ``keep`` characters for an error message: an argument can be huge."""
    return text if len(text) <= keep else f"{text[:keep]}... ({len(text)} characters)"


def human_size(n: float) -> str:
    """A byte count in IEC units (``1.5 MiB``), the one unit system of every CLI output.

    Raises:
        Nothing.
    """
    if n < 1024:
        return f"{n:.0f} bytes"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} TiB"


def overhead_text(logical: int, storage: int) -> str:
    """How much more the host stores than the contents: ``+12.5%``, or ``4.2x`` past double.

    Raises:
        Nothing.
    """
    if logical <= 0:
        return "no contents"
    ratio = storage / logical
    return f"+{ratio - 1:.1%}" if ratio < 2 else f"{ratio:.1f}x the contents"


def byte_columns() -> tuple[ProgressColumn, ...]:
    """Bar, done/total and speed in IEC units (rich's defaults say MB while we say MiB).

    Raises:
        Nothing.
    """
    from rich.progress import BarColumn, DownloadColumn, ProgressColumn, TimeRemainingColumn

    class _Speed(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text(
                "?" if speed is None else f"{human_size(speed)}/s", style="progress.data.speed"
            )

    return (BarColumn(), DownloadColumn(binary_units=True), _Speed(), TimeRemainingColumn())


def styled(*parts: str | tuple[str, str]) -> Text:
    """Text with our own styling: ``styled(("error", "bold red"), ": ", message)``.

    Plain strings and the first item of each ``(text, style)`` pair are taken literally.

    Raises:
        Nothing.
    """
    return Text.assemble(*parts)


def progress(*columns: ProgressColumn, label_column: bool = True) -> Progress:
    """A transient progress bar on stderr whose task labels are plain text, never markup.

    ``label_column`` puts the task's description first (rich's own ``TextColumn`` would parse
    it as markup, so a file name such as ``[/x]`` would end the command).

    Raises:
        Nothing.
    """
    from rich.progress import Progress, TextColumn

    label = (TextColumn("{task.description}", markup=False),) if label_column else ()
    return Progress(*label, *columns, console=err, transient=True)


@contextlib.contextmanager
def status(text: str) -> Iterator[None]:
    """A spinner with ``text`` on stderr (rich's ``Status`` would parse a plain str as markup).

    Raises:
        Nothing.
    """
    with err.status(Text(text)):
        yield


def emit_json(obj: object) -> None:
    """Print ``obj`` as JSON on stdout (sorted keys, so output is stable)."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def report_error(exc: SealpodError, json_mode: bool) -> None:
    """Render a sealpod error: JSON on stdout in ``--json`` mode, plain words on stderr."""
    if json_mode:
        emit_json({"ok": False, "error": exc.to_dict()})
        return
    err.print(error_line(exc.code, exc.message))
    details = exc.to_dict()
    for key in ("step", "field", "offset", "expected", "actual"):
        if details.get(key) is not None:
            err.print(f"  {key}: {details[key]}")
    violations = details.get("violations")
    if isinstance(violations, list):
        for v in violations:
            err.print(f"  - {v}")


def is_usage_error(exc: BaseException) -> bool:
    """Whether ``exc`` is click's ``ClickException`` (bad usage, bad option value).

    Typer ships its own copy of click, so the class is recognised by what it offers.

    Raises:
        Nothing.
    """
    return all(hasattr(exc, a) for a in ("format_message", "show", "exit_code"))


def report_usage_error(exc: Any, json_mode: bool) -> None:
    """Render a usage error: click's usage text on stderr, or JSON (code ``config.usage``).

    Raises:
        Nothing.
    """
    if json_mode:
        message = exc.format_message()
        emit_json({"ok": False, "error": {"code": "config.usage", "message": message}})
        return
    exc.show()


def error_line(code: str, message: str) -> Text:
    """``error (code): message`` with only the word "error" and the code styled.

    Raises:
        Nothing.
    """
    return styled(("error", "bold red"), " ", (f"({code})", "dim"), ": ", message)


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
