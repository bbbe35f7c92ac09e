"""The agent's wire format (docs/agent.md): JSON messages on a ``SOCK_SEQPACKET`` UNIX socket.

A client sends one request, the first message of the connection:

* ``{"v": 1, "op": "run", "argv": [...], "env": {...}, "umask": N}`` with four descriptors
  (stdin, stdout, stderr, the working directory) as ``SCM_RIGHTS``;
* ``{"v": 1, "op": "status"}`` with none.

Then, for a run, the agent answers ``{"started": PID}`` once it forked the pod's process (the
client waits for that a bounded time: an agent that is stopped or wedged must not hang every
``sealpod run``), the client sends ``{"signal": N}`` for each signal it receives, and the agent
answers ``{"exit": N}`` when the pod's process ended, or ``{"error": ..., "code": ...,
"exit": N}`` when it refused the request. A status request is answered with ``{"status": ...}``.

Pure parsing, no I/O: both ends and the hostile-input tests use these functions. Imported by
the client on every ``sealpod run``, so it uses the standard library only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from sealpod.errors import AgentError
from sealpod.runtime.signals import FORWARDED_SIGNALS

VERSION = 1
#: The largest message either end accepts. A run request carries the client's environment;
#: SEQPACKET messages must fit the socket's send buffer (~208 KiB by default).
MAX_MESSAGE = 192 * 1024
#: Descriptors a run request carries: stdin, stdout, stderr, working directory.
RUN_FDS = 4
MAX_ARGS = 4096
#: The signals a client may forward: those ``sealpod run`` forwards to its workload.
FORWARDED = frozenset(int(s) for s in FORWARDED_SIGNALS)


@dataclass(frozen=True, slots=True)
class RunRequest:
    """Start ``sealpod <argv>`` with the client's environment, umask and descriptors."""

    argv: tuple[str, ...]
    env: dict[str, str] = field(repr=False)  # the host's environment: not for logs
    umask: int


@dataclass(frozen=True, slots=True)
class StatusRequest:
    """Describe the agent and the pods it runs."""


@dataclass(frozen=True, slots=True)
class Reply:
    """The agent's answer: an exit status, a refusal, or a status document."""

    exit: int | None = None
    started: int | None = None
    error: str | None = None
    code: str | None = None
    status: dict[str, object] | None = None


def encode(message: dict[str, object]) -> bytes:
    """One message's bytes.

    Raises:
        AgentError: the message does not fit :data:`MAX_MESSAGE`.
    """
    data = json.dumps(message, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    if len(data) > MAX_MESSAGE:
        raise AgentError(f"agent message too large ({len(data)} bytes, at most {MAX_MESSAGE})")
    return data


def run_request(argv: list[str], env: dict[str, str], umask: int) -> bytes:
    """The bytes of a run request (its descriptors travel beside them)."""
    return encode({"v": VERSION, "op": "run", "argv": argv, "env": env, "umask": umask})


def _document(data: bytes, what: str) -> dict[str, object]:
    if len(data) > MAX_MESSAGE:
        raise AgentError(f"agent {what}: message too large")
    try:
        doc = json.loads(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise AgentError(f"agent {what}: not a JSON message") from exc
    if not isinstance(doc, dict):
        raise AgentError(f"agent {what}: not a JSON object")
    return doc


def _text(value: object) -> bool:
    # Text that can become a C string (argv, environment): no NUL.
    return isinstance(value, str) and "\0" not in value


def parse_request(data: bytes) -> RunRequest | StatusRequest:
    """The request a client opened its connection with.

    Raises:
        AgentError: not a request of this version, or a malformed field (named).
    """
    doc = _document(data, "request")
    if doc.get("v") != VERSION:
        raise AgentError(f"agent request: unsupported version {doc.get('v')!r:.20}")
    op = doc.get("op")
    if op == "status" and doc.keys() == {"v", "op"}:
        return StatusRequest()
    if op != "run":
        raise AgentError(f"agent request: unknown operation {op!r:.40}")
    if doc.keys() != {"v", "op", "argv", "env", "umask"}:
        raise AgentError("agent request: a run request has exactly v, op, argv, env, umask")
    argv, env, umask = doc["argv"], doc["env"], doc["umask"]
    if not isinstance(argv, list) or not 0 < len(argv) <= MAX_ARGS:
        raise AgentError("agent request: argv must be a non-empty list")
    if not all(_text(arg) for arg in argv):
        raise AgentError("agent request: argv holds a non-string or a NUL")
    if not isinstance(env, dict) or not all(
        _text(k) and k and "=" not in k and _text(v) for k, v in env.items()
    ):
        raise AgentError("agent request: env must map names to strings (no NUL, no '=')")
    if type(umask) is not int or not 0 <= umask <= 0o777:
        raise AgentError("agent request: umask must be an integer from 0 to 0o777")
    return RunRequest(argv=tuple(argv), env=dict(env), umask=umask)


def parse_control(data: bytes) -> int:
    """The signal number a ``{"signal": N}`` message forwards.

    Raises:
        AgentError: malformed, or a signal ``sealpod run`` does not forward.
    """
    doc = _document(data, "control message")
    sig = doc.get("signal")
    if doc.keys() != {"signal"} or type(sig) is not int or sig not in FORWARDED:
        raise AgentError('agent control message: expected {"signal": N}, N a forwarded signal')
    return sig


def parse_reply(data: bytes) -> Reply:
    """The agent's answer to a request.

    Raises:
        AgentError: malformed.
    """
    doc = _document(data, "reply")
    keys = ("exit", "started", "error", "code", "status")
    exit_code, started, error, code, status = (doc.get(k) for k in keys)
    if not doc.keys() <= set(keys) or not doc:
        raise AgentError("agent reply: unexpected fields")
    if exit_code is not None and (type(exit_code) is not int or not 0 <= exit_code <= 255):
        raise AgentError("agent reply: exit must be an integer from 0 to 255")
    if started is not None and (type(started) is not int or started <= 0):
        raise AgentError("agent reply: started must be a process id")
    if error is not None and not isinstance(error, str):
        raise AgentError("agent reply: error must be text")
    if code is not None and not isinstance(code, str):
        raise AgentError("agent reply: code must be text")
    if status is not None:
        status = _check_status(status)
    if status is None and exit_code is None and started is None:
        raise AgentError("agent reply: no exit status, start or status document")
    return Reply(exit=exit_code, started=started, error=error, code=code, status=status)


def _check_status(status: object) -> dict[str, object]:
    """A status document as ``sealpod agent status`` renders it: the agent's pid, version and
    socket, and each pod's pid, shown command line and start time (seconds since the epoch).

    Raises:
        AgentError: another shape.
    """
    if not isinstance(status, dict) or status.keys() != {"pid", "version", "socket", "pods"}:
        raise AgentError("agent status: expected pid, version, socket and pods")
    pods = status["pods"]
    if (
        type(status["pid"]) is not int
        or not isinstance(status["version"], str)
        or not isinstance(status["socket"], str)
        or not isinstance(pods, list)
    ):
        raise AgentError("agent status: a field of the wrong type")
    for pod in pods:
        if (
            not isinstance(pod, dict)
            or pod.keys() != {"pid", "argv", "started"}
            or type(pod["pid"]) is not int
            or not isinstance(pod["argv"], list)
            or not all(isinstance(a, str) for a in pod["argv"])
            or type(pod["started"]) not in (int, float)
            or not 0 <= pod["started"] < 1e11
        ):
            raise AgentError("agent status: a pod entry of the wrong shape")
    return status
