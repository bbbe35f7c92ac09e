"""``sealpod --debug`` shows the traceback of a typed error and still exits with its family's
code: a script that adds --debug to see why must not see every refusal turn into exit 70."""

from __future__ import annotations

from pathlib import Path

import pytest

from sealpod.cli import _common
from sealpod.cli.main import run_cli


def test_debug_keeps_a_typed_errors_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(_common.STATE, "debug", False)
    plain = run_cli(["inspect", str(tmp_path / "missing")])
    capsys.readouterr()
    debug = run_cli(["--debug", "inspect", str(tmp_path / "missing")])
    err = capsys.readouterr().err
    assert plain not in (0, _common.EXIT_INTERNAL)
    assert debug == plain
    assert "Traceback" in err
