"""The agent's client: which lines it takes, where it looks, what it refuses, and that it
loads nothing heavy (it runs before every `sealpod` command)."""

from __future__ import annotations

import os
import select
import signal
import socket
import threading
from pathlib import Path

import pytest

from conftest import modules_after
from sealpod.agent import client, preload
from sealpod.errors import AgentError


@pytest.mark.parametrize(
    ("argv", "taken"),
    [
        (["run", "b"], True),
        (["--debug", "run", "b", "--json"], True),
        (["kms", "run"], False),  # a word "run" after another command is not the command
        (["--json", "run"], False),  # not a root option: the cold path reports the usage error
        (["agent", "serve"], False),
        ([], False),
    ],
)
def test_only_sealpod_run_lines_go_to_the_agent(argv: list[str], taken: bool) -> None:
    assert client.is_run_line(argv) is taken


def test_the_socket_lives_under_sealpod_home(tmp_path: Path) -> None:
    assert client.socket_path({"SEALPOD_HOME": str(tmp_path)}) == str(
        tmp_path / "run" / "agent.sock"
    )
    assert client.socket_path({}).endswith("/.local/share/sealpod/run/agent.sock")


def test_the_mode_is_one_of_three(monkeypatch: pytest.MonkeyPatch) -> None:
    assert client.agent_mode({}) == "auto"
    assert client.agent_mode({"SEALPOD_AGENT": "off"}) == "off"
    with pytest.raises(AgentError, match="auto, off, require"):
        client.agent_mode({"SEALPOD_AGENT": "yes"})


def test_no_agent_means_a_cold_start_unless_one_is_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEALPOD_HOME", str(tmp_path))
    monkeypatch.delenv("SEALPOD_AGENT", raising=False)
    assert client.run_via_agent(["run", "b"]) is None
    monkeypatch.setenv("SEALPOD_AGENT", "require")
    with pytest.raises(AgentError, match="sealpod agent serve"):
        client.run_via_agent(["run", "b"])
    assert client.run_via_agent(["kms", "status"]) is None  # other commands never need it


def test_a_stale_socket_is_a_cold_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "run").mkdir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stale.bind(str(tmp_path / "run" / "agent.sock"))
    stale.close()  # the path stays, nothing listens: an agent killed with SIGKILL
    monkeypatch.setenv("SEALPOD_HOME", str(tmp_path))
    monkeypatch.setenv("SEALPOD_AGENT", "auto")
    assert client.run_via_agent(["run", "b"]) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to serve a socket as another uid")
def test_a_socket_served_by_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.sock"
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # serve as nobody, then wait to be killed
        try:
            os.close(read_end)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            listener.bind(str(path))
            os.chmod(path, 0o666)
            os.setuid(65534)
            listener.listen(1)  # the kernel records the peer credentials here
            os.write(write_end, b"x")
            listener.accept()
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        assert os.read(read_end, 1) == b"x"
        with pytest.raises(AgentError, match="uid 65534"):
            client.connect(str(path))
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(read_end)


def test_the_console_script_loads_only_the_standard_library_before_it_knows() -> None:
    loaded = modules_after("import sealpod.cli.entry")
    heavy = {"typer", "click", "rich", "pydantic", "cryptography", "httpx", "pathlib"}
    assert sorted(heavy & loaded) == []


@pytest.mark.parametrize("name", preload.MODULES)
def test_every_preloaded_module_exists(name: str) -> None:
    loaded = modules_after(f"import {name}")
    assert name in loaded


def _listening(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> socket.socket:
    (tmp_path / "run").mkdir(exist_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(str(tmp_path / "run" / "agent.sock"))
    listener.listen(8)
    monkeypatch.setenv("SEALPOD_HOME", str(tmp_path))
    monkeypatch.setenv("SEALPOD_AGENT", mode)
    return listener


def _hang_guard() -> None:
    def hung(_signum: int, _frame: object) -> None:
        raise AssertionError("the client hung")

    signal.signal(signal.SIGALRM, hung)
    signal.alarm(15)


@pytest.mark.parametrize("mode", ["auto", "require"])
def test_an_agent_that_never_starts_the_run_does_not_hang_the_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    # A stopped (SIGSTOP) or wedged agent: the kernel queues the connection and the request,
    # nothing ever answers.
    monkeypatch.setattr(client, "START_TIMEOUT_SECS", 0.5, raising=False)
    with _listening(tmp_path, monkeypatch, mode):
        _hang_guard()
        try:
            with pytest.raises(AgentError, match="did not start the run"):
                client.run_via_agent(["run", "b"])
        finally:
            signal.alarm(0)


def test_an_agent_that_drops_the_connection_is_an_agent_error_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _listening(tmp_path, monkeypatch, "auto") as listener:

        def drop() -> None:  # close with the request unread: the client sees ECONNRESET
            conn, _ = listener.accept()
            select.select([conn], [], [], 10)
            conn.close()

        thread = threading.Thread(target=drop)
        thread.start()
        try:
            with pytest.raises(AgentError):
                client.run_via_agent(["run", "b"])
        finally:
            thread.join()


def test_a_bad_sealpod_agent_value_does_not_break_other_commands(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SEALPOD_AGENT", "yes")
    assert client.run_via_agent(["--version"]) is None
    with pytest.raises(AgentError, match="auto, off, require"):
        client.run_via_agent(["run", "b"])
