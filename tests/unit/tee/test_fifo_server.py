"""The fake kernel's FIFO server (sealpod.testing._fifo) never touches a descriptor that the
caller's thread may own: a removed input is closed by the server thread, after the poll that
still holds its number. Before, the caller closed it; the number was reused by the runtime's
next open (the bundle's busybox being hashed) and the server read that file's bytes as pipe
input, so the verify phase saw a truncated file (a flaky e2e test)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sealpod.testing._fifo import FifoServer


def test_removing_an_input_leaves_its_descriptor_to_the_server_thread(tmp_path: Path) -> None:
    server = FifoServer()  # not started: nothing but the caller's thread runs
    (tmp_path / "entry").mkdir()
    server.add_input(tmp_path / "entry" / "inblob", lambda data: None)
    fd = server._inputs[tmp_path / "entry" / "inblob"].fd
    server.remove_under(tmp_path / "entry")
    os.fstat(fd)  # still open: the caller's next open cannot get this number
    assert not (tmp_path / "entry" / "inblob").exists()
    server.stop()
    try:
        os.fstat(fd)
    except OSError:
        pass
    else:
        raise AssertionError("stop() must close the retired descriptor")


def test_a_file_opened_right_after_a_removal_is_read_whole(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    target = tmp_path / "payload"
    target.write_bytes(data)
    received: list[bytes] = []
    with FifoServer() as server:
        for i in range(60):
            entry = tmp_path / f"e{i}"
            entry.mkdir()
            server.add_input(entry / "inblob", received.append)
            server.remove_under(entry)
            fd = os.open(target, os.O_RDONLY)  # likely the number the input just had
            try:
                chunks = []
                while chunk := os.read(fd, 1 << 20):
                    chunks.append(chunk)
            finally:
                os.close(fd)
            assert b"".join(chunks) == data, f"round {i}: the server read from our file"
    assert received == []
    assert server.errors == []


def test_an_input_whose_fifo_vanished_keeps_no_closed_number(tmp_path: Path) -> None:
    # Found in review: at a writer's EOF the server closes its read end and re-opens the path;
    # when the FIFO was unlinked meanwhile (not through remove_under) the open failed, the
    # write was lost, and the input kept the closed number: the server then polled it (a busy
    # loop on POLLNVAL) and remove_under/stop closed it again -- by then the caller's file.
    received: list[bytes] = []
    (tmp_path / "entry").mkdir()
    path = tmp_path / "entry" / "inblob"
    with FifoServer() as server:
        server.add_input(path, received.append)
        writer = os.open(path, os.O_WRONLY)
        path.unlink()
        os.write(writer, b"abc")
        os.close(writer)
        deadline = time.monotonic() + 5
        while not server.errors and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [type(e) for e in server.errors] == [FileNotFoundError]
        ours = os.open(tmp_path / "entry", os.O_RDONLY)  # the lowest free number
        try:
            server.remove_under(tmp_path / "entry")
            time.sleep(0.05)  # a loop of the server thread: it closes what was retired
            os.fstat(ours)  # still ours
        finally:
            os.close(ours)
    assert received == [b"abc"]
