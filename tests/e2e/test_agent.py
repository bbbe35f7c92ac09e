"""`sealpod run` through `sealpod agent serve`: the same pod, the same checks as a cold start,
plus what the agent adds (signals and exit status relayed, a vanished client's pod stopped,
hostile requests refused, a stale socket survived). A real KMS on 127.0.0.1, real bubblewrap,
simulated TEE evidence."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pod_harness import (
    SEALPOD,
    Kms,
    Pod,
    build_pod,
    busybox_rootfs,
    cli,
    descendants,
    events,
    kms_fixture,  # noqa: F401 (the kms fixture)
    mounted,
    need_sandbox,
    need_volumes,
    run_args,
)

from sealpod.agent import protocol

INSPECT = """#!/bin/sh
echo "ENV_SECRET=$DB_PASSWORD"
echo "FILE_SECRET=$(cat /run/secrets/token)"
grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status | tr -d '\\t' | tr ':' '='
if touch /etc/written 2>/dev/null; then echo "ROOT=rw"; else echo "ROOT=ro"; fi
exit 7
"""

SLEEPER = """#!/bin/sh
trap 'echo "got TERM"; exit 42' TERM
echo "READY"
while true; do sleep 0.1; done
"""

SPEC = """
[process]
entrypoint = "/app/main.sh"
user = "app"
[process.env]
DB_PASSWORD = { secret = "db-password" }
[[files]]
path = "/run/secrets/token"
secret = "api-token"
[identity]
product_id = 1
svn = 1
"""

VOLUME_SPEC = (
    SPEC
    + """
[[volumes]]
path = "/data"
name = "appdata"
"""
)


class Agent:
    """A `sealpod agent serve` process, started with ``-X importtime``: a module a pod imports
    after the fork prints an ``import time:`` line on that pod's stderr (the client's)."""

    def __init__(self, home: Path, log: Path, *extra: str) -> None:
        self.home = home
        self.socket = home / "run" / "agent.sock"
        self.log = log
        argv = [sys.executable, "-X", "importtime", str(SEALPOD), "agent", "serve", *extra]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv, stderr=out, env={**os.environ, "SEALPOD_HOME": str(home)}
            )
        deadline = time.monotonic() + 60
        while "sealpod agent: serving" not in log.read_text():  # a stale socket may be there
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            assert time.monotonic() < deadline, "the agent did not start"
            time.sleep(0.05)

    def status(self) -> dict[str, object]:
        out = cli("agent", "status", "--json")
        doc = json.loads(out)
        assert isinstance(doc, dict)
        return doc

    def wait_idle(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.status()["pods"]:
            assert time.monotonic() < deadline, self.status()
            time.sleep(0.1)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@pytest.fixture(name="agent")
def agent_fixture(_isolated_home: Path, tmp_path: Path) -> Iterator[Agent]:
    need_sandbox()
    agent = Agent(_isolated_home, tmp_path / "agent.log", "--grace", "3")
    try:
        yield agent
    finally:
        agent.stop()


def _env(mode: str = "require") -> dict[str, str]:
    return {**os.environ, "SEALPOD_AGENT": mode}


def _pod(tmp_path: Path, kms: Kms, script: str, spec: str = SPEC) -> Pod:
    rootfs = busybox_rootfs(tmp_path / "rootfs", {"/app/main.sh": script})
    pod = build_pod(tmp_path, spec, rootfs)
    kms.put_secret("db-password", b"agent-db-password")
    kms.put_secret("api-token", b"agent-api-token")
    names = ["db-password", "api-token"]
    if "[[volumes]]" in spec:
        kms.put_secret("volume.appdata", generate="bytes:32")
        names.append("volume.appdata")
    kms.allow(pod, names)
    return pod


def test_a_pod_started_through_the_agent_runs_as_a_cold_start_does_and_imports_nothing(
    tmp_path: Path, kms: Kms, agent: Agent
) -> None:
    pod = _pod(tmp_path, kms, INSPECT)
    done = subprocess.run(run_args(pod, kms, "--json"), capture_output=True, text=True,
                          timeout=120, env=_env(), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 7, done.stderr
    lines = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    assert lines["ENV_SECRET"] == "agent-db-password"
    assert lines["FILE_SECRET"] == "agent-api-token"
    assert (lines["CapEff"], lines["NoNewPrivs"], lines["Seccomp"]) == (
        "0000000000000000",
        "1",
        "2",
    )
    assert lines["ROOT"] == "ro"
    phases = [e["phase"] for e in events(done.stderr) if e.get("event") == "phase"]
    assert phases[:3] == ["verify", "preflight", "attest"] and "sandbox" in phases
    late = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert late == [], "a pod forked by the agent imported what the agent had not:\n" + "\n".join(
        late
    )
    agent.wait_idle()
    log = agent.log.read_text()
    assert "pod " in log and "exited 7" in log
    assert "agent-db-password" not in log and "agent-api-token" not in log


def test_a_refusal_comes_back_through_the_agent_with_its_exit_code(
    tmp_path: Path, kms: Kms, agent: Agent
) -> None:
    _pod(tmp_path, kms, INSPECT)
    changed = build_pod(tmp_path, SPEC.replace("svn = 1", "svn = 2"), tmp_path / "rootfs", "v2")
    done = subprocess.run(run_args(changed, kms, "--json"), capture_output=True, text=True,
                          timeout=120, env=_env())  # fmt: skip
    assert done.returncode == 13, done.stderr
    errors = [e for e in events(done.stderr) if e.get("event") == "error"]
    assert errors and errors[-1]["exit_code"] == 13
    assert "measurement_not_allowed" in done.stderr
    assert "agent-db-password" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("sig", "expected"),
    [(signal.SIGTERM, 42), (signal.SIGINT, 128 + signal.SIGINT), (signal.SIGHUP, 128 + 1)],
)
def test_signals_to_the_client_reach_the_workload_and_its_status_comes_back(
    tmp_path: Path, kms: Kms, agent: Agent, sig: signal.Signals, expected: int
) -> None:
    pod = _pod(tmp_path, kms, SLEEPER)
    proc = subprocess.Popen(run_args(pod, kms, "--json"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_env())  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"READY"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == expected, err.decode()
    exits = [e for e in events(err.decode()) if e.get("event") == "exit"]
    assert exits and exits[-1]["code"] == expected


def test_a_client_killed_with_sigkill_gets_its_pod_stopped_and_unmounted(
    tmp_path: Path, kms: Kms, agent: Agent
) -> None:
    need_volumes()
    pod = _pod(tmp_path, kms, SLEEPER, VOLUME_SPEC)
    vdir = tmp_path / "volumes"
    proc = subprocess.Popen(run_args(pod, kms, "--volume-dir", str(vdir)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"READY"
    pods = agent.status()["pods"]
    assert isinstance(pods, list) and len(pods) == 1
    tree = descendants(int(pods[0]["pid"]))
    proc.kill()
    proc.communicate(timeout=30)
    agent.wait_idle()
    time.sleep(0.2)
    alive = [p for p in tree if Path(f"/proc/{p}").exists()]
    assert alive == [], f"processes left: {alive}"
    assert not mounted(vdir)
    assert "exited 42" in agent.log.read_text()  # the workload's TERM trap ran: a clean stop


def test_stopping_the_agent_stops_its_pods_and_removes_its_socket(
    tmp_path: Path, kms: Kms, agent: Agent
) -> None:
    pod = _pod(tmp_path, kms, SLEEPER)
    proc = subprocess.Popen(run_args(pod, kms), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=_env())  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"READY"
    assert agent.stop() == 0
    proc.communicate(timeout=30)
    assert proc.returncode == 42
    assert not agent.socket.exists()
    # with no agent, auto mode starts cold and require mode refuses with exit 14
    done = subprocess.run(run_args(pod, kms, "--json"), capture_output=True, text=True,
                          timeout=120, env=_env("require"))  # fmt: skip
    assert done.returncode == 14
    assert [e["code"] for e in events(done.stderr) if e.get("event") == "error"] == ["tee.agent"]


def test_a_killed_agent_leaves_a_socket_that_the_next_run_and_agent_survive(
    tmp_path: Path, kms: Kms, agent: Agent
) -> None:
    pod = _pod(tmp_path, kms, INSPECT)
    agent.proc.kill()
    agent.proc.wait(timeout=30)
    assert agent.socket.exists()  # stale: nothing listens
    done = subprocess.run(run_args(pod, kms), capture_output=True, text=True, timeout=120,
                          env=_env("auto"))  # fmt: skip
    assert done.returncode == 7, done.stderr  # started cold
    second = Agent(agent.home, tmp_path / "agent2.log")
    try:
        done = subprocess.run(run_args(pod, kms), capture_output=True, text=True, timeout=120,
                              env=_env())  # fmt: skip
    finally:
        stopped = second.stop()
    assert done.returncode == 7, done.stderr
    assert stopped == 0


def test_a_second_agent_for_the_same_home_is_refused(agent: Agent) -> None:
    done = subprocess.run([str(SEALPOD), "agent", "serve"], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 14
    assert "another sealpod agent" in done.stderr


def _raw(agent: Agent, message: bytes, fds: list[int]) -> protocol.Reply:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        sock.connect(str(agent.socket))
        sock.settimeout(10)
        socket.send_fds(sock, [message], fds)
        return protocol.parse_reply(sock.recv(protocol.MAX_MESSAGE + 1))


def test_hostile_requests_are_refused_and_the_agent_goes_on(agent: Agent, tmp_path: Path) -> None:
    stdio = [0, 1, 2]
    cwd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    not_a_dir = os.open(agent.log, os.O_RDONLY)
    try:
        env = {"SEALPOD_HOME": str(agent.home)}
        cases = [
            (b"\xff\x00 not json", [*stdio, cwd], "not a JSON"),
            (protocol.run_request(["kms", "status"], env, 0o022), [*stdio, cwd], "run` only"),
            (protocol.run_request(["run", "b"], env, 0o022), stdio, "4 descriptors"),
            (protocol.run_request(["run", "b"], env, 0o022), [*stdio, not_a_dir], "directory"),
            (b'{"v":2,"op":"run"}', [], "version"),
            (b'{"v":1,"op":"status"}', [cwd], "no descriptors"),
        ]
        for message, fds, reason in cases:
            reply = _raw(agent, message, fds)
            assert reply.exit == 14 and reply.code == "tee.agent", reason
            assert reply.error is not None and reason in reply.error
        assert agent.status()["pods"] == []  # nothing started, still serving
    finally:
        os.close(cwd)
        os.close(not_a_dir)


def test_a_connection_that_sends_nothing_is_closed_and_does_not_block_others(
    agent: Agent,
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as idle:
        idle.connect(str(agent.socket))
        assert agent.status()["pods"] == []  # served while the idle one waits
        idle.settimeout(30)
        started = time.monotonic()
        reply = protocol.parse_reply(idle.recv(protocol.MAX_MESSAGE + 1))
        assert reply.error is not None and "in time" in reply.error
        assert idle.recv(16) == b""  # then closed
        assert time.monotonic() - started < 15


COUNTER = """#!/bin/sh
n=$(cat /data/count 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > /data/count
echo "COUNT=$n"
"""


def test_a_pod_with_a_volume_keeps_its_data_through_the_agent_and_imports_nothing(
    tmp_path: Path, kms: Kms, agent: Agent
) -> None:
    need_volumes()
    pod = _pod(tmp_path, kms, COUNTER, VOLUME_SPEC)
    vdir = tmp_path / "volumes"
    for expected in (1, 2):
        done = subprocess.run(run_args(pod, kms, "--volume-dir", str(vdir)), capture_output=True,
                              text=True, timeout=120, env=_env())  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert f"COUNT={expected}" in done.stdout
        late = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
        assert late == [], "imported after the fork:\n" + "\n".join(late)
    assert not mounted(vdir)
    assert b"COUNT" not in b"".join(p.read_bytes() for p in vdir.rglob("*") if p.is_file())
