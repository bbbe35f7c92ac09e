"""The type check passes without the optional ``fuse`` extra, as on a fresh machine without
libfuse3-dev (issue 16, item 1): ``make typecheck`` runs this check too; here it is a test so
that a new ``# type: ignore`` that only holds with pyfuse3 installed fails at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_mypy_passes_with_pyfuse3_and_trio_absent() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "mypy_without_extras.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "without the fuse extra: success" in proc.stdout.lower()


def test_the_config_makes_the_extra_absent() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("m", ROOT / "scripts" / "mypy_without_extras.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = module.config_text()
    assert 'follow_imports = "skip"' in text and '"pyfuse3"' in text and "strict = true" in text
