"""Running ``sealpod`` as a user does, for the e2e tests: a real process, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TRACEBACK = "Traceback (most recent call last)"


def sealpod(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sealpod.cli.main ARGS`` in ``cwd`` (this environment, minus any key
    passphrase, plus ``env``); fail the test if a traceback reaches stderr."""
    full_env = {k: v for k, v in os.environ.items() if k != "SEALPOD_KEY_PASSPHRASE"}
    full_env.update(env or {})
    result = subprocess.run(
        [sys.executable, "-m", "sealpod.cli.main", *map(str, args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert TRACEBACK not in result.stderr, result.stderr
    return result


def quick_start(work: Path, *, pod: str, bundle: str) -> None:
    """The README's path in ``work``: ``keygen -o k.pem``, ``init POD``, ``build ... -o BUNDLE``."""
    for args in (
        ("keygen", "-o", "k.pem"),
        ("init", pod),
        ("build", "--spec", f"{pod}/sealpod.toml", "--key", "k.pem", "-o", bundle),
    ):
        result = sealpod(*args, cwd=work)
        assert result.returncode == 0, (args, result.stderr)
