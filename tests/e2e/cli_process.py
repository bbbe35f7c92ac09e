"""Running ``sealpod`` as a user does, for the e2e tests: a real process, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

TRACEBACK = "Traceback (most recent call last)"
#: The installed console script, as a user runs it.
SEALPOD_SCRIPT = Path(sys.executable).parent / "sealpod"


@dataclass(frozen=True, slots=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str


def run_script(args: tuple[str, ...], *, cwd: Path, env: dict[str, str], timeout: float) -> Outcome:
    """Run the installed ``sealpod`` script with no stdin; a hang becomes returncode -1."""
    try:
        result = subprocess.run(
            [str(SEALPOD_SCRIPT), *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Outcome(-1, "", f"timed out after {timeout} s (a hang)")
    return Outcome(result.returncode, result.stdout, result.stderr)


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


def hostile_files(directory: Path, contents: dict[str, bytes]) -> dict[str, Path]:
    """Write ``contents`` as files under ``directory`` (created), plus the paths every command
    must also survive: ``missing``, a directory (``dir``), a FIFO nobody writes (``fifo``) and
    a sparse 17 MiB file over the 16 MiB read limit (``oversized``)."""
    directory.mkdir()
    paths = {name: directory / name for name in contents}
    for name, data in contents.items():
        paths[name].write_bytes(data)
    paths["missing"] = directory / "missing"
    paths["dir"] = directory / "dir"
    paths["dir"].mkdir()
    paths["fifo"] = directory / "fifo"
    os.mkfifo(paths["fifo"])
    paths["oversized"] = directory / "oversized"
    with paths["oversized"].open("wb") as f:  # sparse: 17 MiB on paper, nothing on disk
        f.truncate(17 * 1024 * 1024)
    return paths


def fail_at_commit(
    monkeypatch: pytest.MonkeyPatch, module: object, name: str, *, after_commit: bool
) -> None:
    """Make ``module.name`` (a function taking a ``before_commit`` hook) fail at its commit
    (nothing committed) or just after it (committed, the answer lost), once the hook ran."""
    from sealpod.errors import KmsUnavailable

    real = getattr(module, name)

    def flaky(*args: Any, **kwargs: Any) -> Any:
        hook = kwargs.pop("before_commit")

        def hand_out_then_fail(parts: Any) -> None:
            hook(parts)
            if not after_commit:
                raise KmsUnavailable("the database went away at the commit")

        result = real(*args, before_commit=hand_out_then_fail, **kwargs)
        if after_commit:
            raise KmsUnavailable("the commit's answer was lost")
        return result

    monkeypatch.setattr(module, name, flaky)
