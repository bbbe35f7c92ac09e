"""read_limited: bounded reads of user-named files that cannot hang on a FIFO."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sealpod._files import read_limited
from sealpod.errors import ConfigError, SpecError


def test_reads_a_small_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"hello")
    assert read_limited(tmp_path / "f", "input", limit=5, error=ConfigError) == b"hello"


def test_one_byte_over_the_limit_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 6)
    with pytest.raises(ConfigError, match="larger than 5 bytes"):
        read_limited(tmp_path / "f", "input", limit=5, error=ConfigError)


def test_missing_file_raises_the_given_family(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read pod spec"):
        read_limited(tmp_path / "none", "pod spec", error=SpecError)


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory, expected a file"):
        read_limited(tmp_path, "policy", error=ConfigError)


def test_fifo_without_a_writer_reads_as_empty_instead_of_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert read_limited(fifo, "evidence", error=ConfigError) == b""


def test_a_pipe_with_a_writer_is_read_to_its_end(tmp_path: Path) -> None:
    # As bash's <(command) hands a pipe to sealpod: the reader must wait for all of it.
    code = (
        "import sys, time; from pathlib import Path; from sealpod._files import read_limited;"
        "from sealpod.errors import ConfigError;"
        "sys.stdout.write(str(len(read_limited('/dev/stdin', 'x', error=ConfigError))))"
    )
    with subprocess.Popen(
        [sys.executable, "-c", "import time,sys; sys.stdout.write('a'*10); sys.stdout.flush();"
         "time.sleep(0.3); sys.stdout.write('b'*5)"],
        stdout=subprocess.PIPE,
    ) as writer:  # fmt: skip
        assert writer.stdout is not None
        reader = subprocess.run(
            [sys.executable, "-c", code], stdin=writer.stdout, capture_output=True, text=True,
            timeout=60, check=True,
        )  # fmt: skip
    assert reader.stdout == "15"


def test_write_atomic_replaces_whole_file_with_private_mode(tmp_path: Path) -> None:
    from sealpod._files import write_atomic

    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    write_atomic(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary file left


def test_write_atomic_failure_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    from sealpod._files import write_atomic

    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    with pytest.raises(OSError):
        write_atomic(tmp_path / "missing-dir" / "state.json", b"x")
    (tmp_path / "dir").mkdir()
    with pytest.raises(OSError):
        write_atomic(tmp_path / "dir", b"x")  # rename over a directory fails
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "state.json"]
