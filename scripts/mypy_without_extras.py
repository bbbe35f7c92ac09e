"""Type-check as on a machine without the optional ``fuse`` extra (pyfuse3, trio absent).

``make typecheck`` runs this after the normal ``mypy``: a fresh clone without libfuse3-dev has
no pyfuse3, and the type check must pass there too (no "unused type: ignore"). Rather than a
second virtualenv, mypy is told to treat the extra's modules as it treats a missing module
(``follow_imports = "skip"``: the module and everything from it is ``Any``), with the project's
own settings from pyproject.toml; only the modules that import the extra are checked.
"""

from __future__ import annotations

import sys
import tempfile
import tomllib
from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parents[1]
EXTRA_MODULES = ["pyfuse3", "pyfuse3.*", "trio", "trio.*"]
#: The files that import an optional extra (tests/unit/test_layering.py lists importers).
FILES = ["src/sealpod/volume/fuse.py"]


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return f'"{value}"' if isinstance(value, str) else str(value)


def config_text() -> str:
    """pyproject's [tool.mypy] plus an override that makes the extra's modules absent."""
    mypy_cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    lines = ["[tool.mypy]"]
    absent = {"module": EXTRA_MODULES, "follow_imports": "skip"}
    overrides = [*mypy_cfg.get("overrides", []), absent]
    for key, value in mypy_cfg.items():
        if key not in ("overrides", "files"):
            lines.append(f"{key} = {_toml_value(value)}")
    for override in overrides:
        lines.append("[[tool.mypy.overrides]]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in override.items())
    return "\n".join(lines) + "\n"


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "mypy.toml"
        config.write_text(config_text())
        cache = ROOT / ".mypy_cache" / "no-extras"
        args = ["--config-file", str(config), "--cache-dir", str(cache), *FILES]
        stdout, stderr, status = api.run(args)
    sys.stdout.write(stdout.replace("Success", "Without the fuse extra: success"))
    sys.stderr.write(stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
