"""Every shell block of README.md runs as written, so the README and the code cannot drift.

The blocks are read from README.md itself at test time and run with bash as a user would paste
them: real ``sealpod`` processes, a fresh working directory and a fresh ``$SEALPOD_HOME`` per
block, a time bound per block.

How to mark a block (for everyone adding a README section): put ONE HTML comment on the line
right before each ```` ```sh ```` (or ``bash``/``shell``/``console``) fence. It does not show on
GitHub.

``<!-- readme-test: run -->``
    The block runs with ``bash -euo pipefail`` in a fresh directory; it must be self-contained
    (make what it needs, as a user would). Lines ending in ``&`` run in the background and are
    stopped when the block ends.
``<!-- readme-test: run; wait-for=PATH -->``
    As ``run``; after each background line, wait (at most 60 s) until ``$SEALPOD_HOME/PATH``
    exists, e.g. ``wait-for=kms/server.json`` for ``sealpod kms serve ... &``.
``<!-- readme-test: run; needs=fuse -->``
    As ``run``, skipped with the reason where FUSE cannot mount (``needs=`` takes ``fuse`` or
    ``postgres``; add more to ``NEEDS`` below).
``<!-- readme-test: skip REASON -->``
    Illustrative (a ``make`` target, a production-only or destructive command): not run. The
    reason says why, or which test runs it.

Options combine with ``;`` (``run; needs=fuse; wait-for=kms/server.json``). A shell block
without a marker, or a marker with an unknown word, fails ``test_every_shell_block_is_marked``
with the README line. The KMS's port comes from ``$SEALPOD_KMS_PORT`` (a free port here), so
the README can say ``sealpod kms serve`` as a user types it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
BLOCK_TIMEOUT_SECS = 240
WAIT_SECS = 60
SHELLS = ("sh", "bash", "shell", "console")
_FENCE = re.compile(r"^```(\w*)\s*$")
_MARKER = re.compile(r"^<!--\s*readme-test:\s*(.*?)\s*-->\s*$")
_BACKGROUND = re.compile(r"(?<![&|])&\s*(#.*)?$")  # `cmd &` or `cmd & # why`, not `a && b`


def _fuse_missing() -> str | None:
    from sealpod.volume.fuse import unavailable_reason

    return unavailable_reason()


def _postgres_missing() -> str | None:
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
    except OSError as exc:
        return f"no PostgreSQL on 127.0.0.1:5432 ({exc})"
    return None


#: ``needs=NAME``: a check returning why the block cannot run here, or None.
NEEDS: dict[str, Callable[[], str | None]] = {"fuse": _fuse_missing, "postgres": _postgres_missing}


@dataclass(frozen=True, slots=True)
class Block:
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    marker: str | None  # the marker's text, None if the line before is not a marker
    run: bool = False
    skip_reason: str = ""
    wait_for: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    problems: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return f"README.md:{self.line}"


def _parse_marker(line: int, lang: str, text: str, marker: str | None) -> Block:
    if marker is None:
        return Block(line, lang, text, None, problems=("no <!-- readme-test: ... --> marker",))
    words = [w.strip() for w in marker.split(";") if w.strip()]
    head = words[0] if words else ""
    if head.startswith("skip"):
        reason = head.removeprefix("skip").strip()
        missing = () if reason else ("'skip' needs a reason",)
        return Block(line, lang, text, marker, skip_reason=reason, problems=missing)
    if head != "run":
        return Block(line, lang, text, marker, problems=(f"starts with {head!r}: 'run' or 'skip'",))
    wait_for: list[str] = []
    needs: list[str] = []
    problems: list[str] = []
    for word in words[1:]:
        key, _, value = word.partition("=")
        if key == "wait-for" and value:
            wait_for.append(value)
        elif key == "needs" and value in NEEDS:
            needs.append(value)
        else:
            problems.append(f"unknown option {word!r} (wait-for=PATH, needs={'|'.join(NEEDS)})")
    return Block(line, lang, text, marker, run=True, wait_for=tuple(wait_for), needs=tuple(needs),
                 problems=tuple(problems))  # fmt: skip


def readme_blocks(text: str) -> list[Block]:
    """The shell blocks of ``text`` with their markers (other fenced blocks are ignored)."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        start, lang = i, fence.group(1)
        end = start + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if lang in SHELLS:
            before = lines[start - 1] if start > 0 else ""
            marker = _MARKER.match(before)
            body = "\n".join(lines[start + 1 : end]) + "\n"
            blocks.append(_parse_marker(start + 1, lang, body, marker.group(1) if marker else None))
        i = end + 1
    return blocks


BLOCKS = readme_blocks(README.read_text())


def test_every_shell_block_is_marked() -> None:
    bad = [f"{b.name}: {p}" for b in BLOCKS for p in b.problems]
    assert not bad, (
        "README shell blocks need a marker on the line before the fence, e.g. "
        "<!-- readme-test: run --> or <!-- readme-test: skip REASON --> "
        "(conventions: tests/e2e/test_readme.py):\n" + "\n".join(bad)
    )
    assert any(b.run for b in BLOCKS), "no README block runs"


def test_the_parser_reads_markers_and_refuses_bad_ones() -> None:
    sample = (
        "<!-- readme-test: run; wait-for=kms/server.json; needs=fuse -->\n```sh\nx &\n```\n"
        "```sh\ny\n```\n"
        "<!-- readme-test: skip -->\n```bash\nz\n```\n"
        "<!-- readme-test: run; colour=red -->\n```sh\nw\n```\n"
        "```python\nnot shell\n```\n"
    )
    first, unmarked, no_reason, unknown = readme_blocks(sample)
    assert first.run and first.wait_for == ("kms/server.json",) and first.needs == ("fuse",)
    assert not first.problems and first.text == "x &\n"
    assert unmarked.problems and no_reason.problems and "colour=red" in unknown.problems[0]


def _script(block: Block) -> str:
    """The block as a bash script: after each background line, wait for what it promises."""
    prelude = f"""set -euo pipefail
readme_wait() {{
  local pid=$1 path=$2
  for _ in $(seq 1 {WAIT_SECS * 10}); do
    [ -e "$SEALPOD_HOME/$path" ] && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "README test: the background command exited" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "README test: $SEALPOD_HOME/$path did not appear within {WAIT_SECS} s" >&2
  return 1
}}
"""
    out: list[str] = []
    for line in block.text.splitlines():
        out.append(line)
        if _BACKGROUND.search(line):
            out.extend(f"readme_wait $! '{path}'" for path in block.wait_for)
    return prelude + "\n".join(out) + "\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.timeout(BLOCK_TIMEOUT_SECS + 30)
@pytest.mark.parametrize("block", [b for b in BLOCKS if b.run], ids=lambda b: b.name)
def test_readme_block_runs_as_written(block: Block, tmp_path: Path) -> None:
    for need in block.needs:
        reason = NEEDS[need]()
        if reason is not None:
            pytest.skip(f"{block.name} needs {need}: {reason}")
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(mode=0o700)
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALPOD_")}
    env["SEALPOD_HOME"] = str(home)
    env["SEALPOD_KMS_PORT"] = str(_free_port())
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log = tmp_path / "output.txt"
    with log.open("w") as sink:  # a file, not a pipe: a background server keeps a pipe open
        proc = subprocess.Popen(
            ["bash", "-c", _script(block)],
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the block's background servers are stopped with it
        )
        try:
            proc.wait(timeout=BLOCK_TIMEOUT_SECS)
        except subprocess.TimeoutExpired:
            sink.write(f"\n(timed out after {BLOCK_TIMEOUT_SECS} s)\n")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    output = log.read_text(errors="replace")
    assert "Traceback" not in output, output[-4000:]
    assert proc.returncode == 0, f"{block.name} failed (exit {proc.returncode}):\n{output[-4000:]}"
