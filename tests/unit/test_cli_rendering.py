"""One rendering path: the CLI never lets rich parse text as markup (issue 16, item 3).

``sealpod.cli._common`` owns the consoles (markup and emoji codes off), the styled-text helper,
the progress bar and the spinner. This walks every module of ``sealpod.cli`` for any other
route: ``markup=True``, a string holding a markup tag, a second ``Console``, or rich's own
``Progress`` / ``TextColumn`` / ``status`` (which parse their labels).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from rich.text import Text

import sealpod.cli
from sealpod.cli import _common
from sealpod.errors import BundleError

CLI_DIR = Path(sealpod.cli.__file__).parent
MARKUP_TAG = re.compile(r"\[/?(bold|dim|red|green|yellow|italic|link|/)[^\]]*\]")
OWNED_BY_COMMON = {"Console", "Progress", "TextColumn"}


def _modules() -> list[Path]:
    return sorted(p for p in CLI_DIR.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(CLI_DIR)))
def test_no_second_rendering_path(path: Path) -> None:
    tree = ast.parse(path.read_text())
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Module | ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
        and n.body
        and isinstance(n.body[0], ast.Expr)
    }
    problems: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "markup":
            if not (isinstance(node.value, ast.Constant) and node.value.value is False):
                problems.append(f"line {node.value.lineno}: markup=... other than False")
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if MARKUP_TAG.search(node.value) and id(node) not in docstrings:
                problems.append(f"line {node.lineno}: a markup tag in {node.value[:40]!r}")
        if isinstance(node, ast.Call) and path.name != "_common.py":
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in OWNED_BY_COMMON:
                problems.append(f"line {node.lineno}: {name}(...) outside cli/_common.py")
            owner = getattr(func, "value", None)
            if name == "status" and isinstance(owner, ast.Name) and owner.id in {"err", "out"}:
                problems.append(f"line {node.lineno}: rich's status() parses its text")
    assert not problems, problems


def test_consoles_do_not_parse_markup_or_emoji() -> None:
    for console in (_common.out, _common.err):
        with console.capture() as captured:
            console.print("[/x] [red]b :smile: [link=x]y[/link]")
        assert captured.get().strip() == "[/x] [red]b :smile: [link=x]y[/link]"


def test_error_line_styles_only_our_words(capsys: pytest.CaptureFixture[str]) -> None:
    message = "policy 'p' has no [release] table; [/x] [red]b"
    _common.report_error(BundleError(message), json_mode=False)
    assert message in capsys.readouterr().err
    line = _common.error_line("bundle", message)
    assert isinstance(line, Text) and line.plain == f"error (bundle): {message}"
    assert [span.style for span in line.spans] == ["bold red", "dim"]


def test_sizes_are_iec_everywhere() -> None:
    assert _common.human_size(512) == "512 bytes"
    assert _common.human_size(3 * 1024 * 1024) == "3.0 MiB"
    assert _common.human_size(5 * 1024**4) == "5.0 TiB"


def test_overhead_is_readable_for_tiny_contents() -> None:
    assert _common.overhead_text(1000, 1125) == "+12.5%"
    assert _common.overhead_text(8, 5_033_000) == "629125.0x the contents"
    assert "%" not in _common.overhead_text(100, 62_915)
    assert _common.overhead_text(0, 4096) == "no contents"


def test_progress_bars_say_mib_not_mb() -> None:
    import io

    from rich.console import Console
    from rich.progress import Progress

    sink = io.StringIO()
    console = Console(file=sink, force_terminal=True, width=120, markup=False)
    with Progress(*_common.byte_columns(), console=console) as bar:
        task = bar.add_task("x", total=3 * 1024 * 1024)
        bar.advance(task, 2 * 1024 * 1024)
        bar.refresh()
    shown = sink.getvalue()
    assert "MiB" in shown and " MB" not in shown, shown
