"""The agent's loop and its children without bubblewrap: an :class:`Agent` in a subprocess whose
runner reports what a pod would inherit (descriptors, signal state), driven through the wire."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sealpod.agent import client, protocol
from sealpod.errors import AgentError

AGENT = textwrap.dedent(
    """
    import json, os, signal, sys, time
    from pathlib import Path
    from sealpod.agent.server import Agent

    def runner(argv):
        what = argv[1]
        if what == "exit":
            return int(argv[2])
        if what == "sleep":
            time.sleep(float(argv[2]))
            return 0
        if what == "sysexit":
            sys.exit()
        if what == "inherited":
            fds = sorted(int(n) for n in os.listdir("/proc/self/fd"))
            mask = sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, []))
            handlers = {int(s): getattr(signal.getsignal(s), "__name__", str(signal.getsignal(s)))
                        for s in (1, 2, 3, 10, 12, 15, 17)}
            print(json.dumps({"fds": fds, "mask": mask, "handlers": handlers}), flush=True)
            return 0
        return 2

    if os.environ.get("EARLY_SIGNAL"):  # a relayed signal that reaches the child at once
        real_fork = os.fork
        def fork():
            pid = real_fork()
            if pid == 0:
                os.kill(os.getpid(), signal.SIGTERM)
            return pid
        os.fork = fork

    if os.environ.get("FAIL_FORK"):  # no process left for this user
        def fork():
            raise BlockingIOError(11, "Resource temporarily unavailable")
        os.fork = fork

    if os.environ.get("IGNORE_QUIT"):  # `sealpod agent serve &` from a script
        signal.signal(signal.SIGQUIT, signal.SIG_IGN)

    if os.environ.get("NOFILE"):
        import resource
        n = int(os.environ["NOFILE"])
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    Agent(home=Path(sys.argv[1]), runner=runner, grace_secs=2,
          log=lambda line: print(f"sealpod agent: {line}", file=sys.stderr, flush=True)).serve()
    """
)


class Served:
    def __init__(self, home: Path, log: Path, env: dict[str, str]) -> None:
        self.home = home
        self.log = log
        self.socket = str(home / "run" / "agent.sock")
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", AGENT, str(home)],
                stderr=out,
                env={**os.environ, **env},
            )
        deadline = time.monotonic() + 30
        while "serving" not in log.read_text():
            assert self.proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline
            time.sleep(0.02)

    def connect(self) -> socket.socket:
        sock = client.connect(self.socket)
        assert sock is not None
        sock.settimeout(20)
        return sock

    def run(self, *argv: str, stdio: list[int] | None = None) -> socket.socket:
        sock = self.connect()
        fds = stdio or [0, 1, 2]
        cwd = os.open(".", os.O_PATH | os.O_DIRECTORY)
        try:
            socket.send_fds(sock, [protocol.run_request(["run", *argv], dict(os.environ), 0o22)],
                            [*fds, cwd])  # fmt: skip
        finally:
            os.close(cwd)
        return sock

    def exit_of(self, sock: socket.socket) -> int:
        with sock:
            while True:
                reply = protocol.parse_reply(sock.recv(protocol.MAX_MESSAGE + 1))
                assert reply.error is None, reply
                if reply.exit is not None:
                    return reply.exit

    def status(self) -> dict[str, object]:
        return client.agent_status(self.socket)

    def inherited(self) -> dict[str, Any]:
        """What a pod's process holds: its descriptors, signal mask and handlers."""
        read_end, write_end = os.pipe()
        sock = self.run("inherited", stdio=[0, write_end, 2])
        os.close(write_end)
        try:
            assert self.exit_of(sock) == 0
            seen: dict[str, Any] = json.loads(os.read(read_end, 65536))
        finally:
            os.close(read_end)
        return seen

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


@pytest.fixture(name="served")
def served_fixture(
    _isolated_home: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Served]:
    env = getattr(request, "param", {})
    served = Served(_isolated_home, tmp_path / "agent.log", env)
    try:
        yield served
    finally:
        served.stop()


@pytest.mark.parametrize("served", [{"EARLY_SIGNAL": "1"}], indirect=True)
def test_a_signal_that_reaches_a_child_before_it_is_set_up_ends_that_pod_not_the_agent(
    served: Served,
) -> None:
    # Before: the child still had the agent's wakeup fd and handler, so the SIGTERM told the
    # agent to stop (every pod) and the pod itself ignored it.
    sock = served.run("sleep", "30")
    assert served.exit_of(sock) == 128 + signal.SIGTERM  # as a cold start killed that early
    time.sleep(0.2)
    assert "stopping" not in served.log.read_text()
    assert served.status()["pods"] == []


def test_a_pod_inherits_no_descriptor_and_no_signal_state_of_the_agent(served: Served) -> None:
    idle = [served.connect() for _ in range(3)]  # other clients' connections
    busy = served.run("sleep", "30")
    try:
        seen = served.inherited()
    finally:
        for s in (*idle, busy):
            s.close()
    assert len(seen["fds"]) == 4  # 0, 1, 2 and the listing's own
    assert seen["mask"] == []
    dfl = str(signal.SIG_DFL)
    assert seen["handlers"]["15"] == seen["handlers"]["1"] == seen["handlers"]["17"] == dfl
    assert "default_int_handler" in seen["handlers"]["2"]


def test_sys_exit_without_a_code_is_success_as_in_a_cold_start(served: Served) -> None:
    assert served.exit_of(served.run("sysexit")) == 0


@pytest.mark.parametrize("served", [{"FAIL_FORK": "1"}], indirect=True)
def test_a_fork_that_fails_is_a_refusal_and_the_agent_goes_on(served: Served) -> None:
    with served.run("exit", "3") as sock:
        reply = protocol.parse_reply(sock.recv(protocol.MAX_MESSAGE + 1))
    assert reply.error is not None and "fork" in reply.error
    assert served.proc.poll() is None
    assert served.status()["pods"] == []


@pytest.mark.parametrize("served", [{"NOFILE": "40"}], indirect=True)
def test_a_flood_of_connections_does_not_kill_the_agent(served: Served) -> None:
    flood = []
    for _ in range(100):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.setblocking(False)
        try:
            s.connect(served.socket)
        except BlockingIOError:  # the backlog is full
            s.close()
            continue
        flood.append(s)
    time.sleep(1)
    assert served.proc.poll() is None, served.log.read_text()[-2000:]
    for s in flood:
        s.close()
    deadline = time.monotonic() + 20
    while True:  # the flood's connections are dropped as the agent reads their end
        try:
            assert served.exit_of(served.run("exit", "5")) == 5
            break
        except (AgentError, OSError, AssertionError):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert served.proc.poll() is None


def test_a_client_that_floods_signals_and_never_reads_does_not_block_the_agent(
    served: Served,
) -> None:
    sent = 0
    with served.run("sleep", "30") as sock:
        sock.setblocking(False)
        # Either the agent stops reading this client and its socket fills up, or a relayed
        # SIGUSR1 has already ended the pod (its default action) and the agent hung up: in
        # both cases it went on serving everyone else, which the status request checks.
        with pytest.raises((BlockingIOError, ConnectionResetError, BrokenPipeError)):
            for _ in range(100_000):
                sock.send(protocol.encode({"signal": int(signal.SIGUSR1)}))
                sent += 1
    assert sent > 0
    assert served.status()["pid"] == served.proc.pid


def test_status_stays_within_one_message_whatever_the_pods_command_lines(served: Served) -> None:
    long = [served.run("sleep", "30", "x" * 100_000) for _ in range(2)]
    try:
        for sock in long:  # started
            assert protocol.parse_reply(sock.recv(protocol.MAX_MESSAGE + 1)).started
        pods = served.status()["pods"]
        assert isinstance(pods, list) and len(pods) == 2
    finally:
        for sock in long:
            sock.close()


@pytest.mark.parametrize("served", [{"IGNORE_QUIT": "1"}], indirect=True)
def test_a_signal_the_agents_starter_ignored_is_not_ignored_in_a_pod(served: Served) -> None:
    assert served.inherited()["handlers"]["3"] == str(signal.SIG_DFL)


def test_stdio_that_cannot_be_written_is_refused(served: Served, tmp_path: Path) -> None:
    path_only = os.open(tmp_path, os.O_PATH)
    try:
        with served.run("exit", "0", stdio=[0, path_only, 2]) as sock:
            reply = protocol.parse_reply(sock.recv(protocol.MAX_MESSAGE + 1))
    finally:
        os.close(path_only)
    assert reply.exit == 14 and reply.error is not None and "open for I/O" in reply.error
