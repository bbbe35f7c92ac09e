"""``sealpod run`` through a running agent: hand the command line, the environment and the
terminal to ``sealpod agent serve`` and relay signals and the exit status (docs/agent.md).

This runs before anything else on every ``sealpod`` start, so it imports the standard library
and sealpod's light modules only; a start that does not use the agent pays a ``stat``.
``SEALPOD_AGENT`` chooses: ``auto`` (default: use the agent when its socket answers), ``off``
(never), ``require`` (fail with exit 14 when it does not answer).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
from collections.abc import Iterator, Mapping, Sequence

from sealpod._home import raw_home
from sealpod.agent import protocol
from sealpod.errors import AgentError

AGENT_ENV = "SEALPOD_AGENT"
MODES = ("auto", "off", "require")
#: Root options that may come before ``run`` on a line the agent takes.
_ROOT_FLAGS = frozenset({"--debug"})
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
#: Seconds the agent has to accept a connection and fork the pod (it answers ``started``); a
#: stopped or wedged agent must not hang every ``sealpod run``. The pod itself is not timed.
START_TIMEOUT_SECS = 10.0


def socket_path(environ: Mapping[str, str] = os.environ) -> str:
    """The agent's socket: ``$SEALPOD_HOME/run/agent.sock``."""
    return os.path.join(os.path.expanduser(raw_home(environ)), "run", "agent.sock")


def agent_mode(environ: Mapping[str, str] = os.environ) -> str:
    """``SEALPOD_AGENT``: auto, off or require.

    Raises:
        AgentError: another value.
    """
    mode = environ.get(AGENT_ENV) or "auto"
    if mode not in MODES:
        raise AgentError(f"${AGENT_ENV} must be one of {', '.join(MODES)}, not {mode[:40]!r}")
    return mode


def is_run_line(argv: Sequence[str]) -> bool:
    """Whether the command line is ``sealpod [--debug] run ...`` (the only one the agent
    takes: every other command is short-lived and gains nothing from it)."""
    for word in argv:
        if word == "run":
            return True
        if word not in _ROOT_FLAGS:
            return False
    return False


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a UNIX socket (the kernel's word)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return int(_UCRED.unpack(raw)[1])


def connect(path: str) -> socket.socket | None:
    """A connection to the agent at ``path`` (with :data:`START_TIMEOUT_SECS` as its timeout);
    None when no agent listens there.

    Raises:
        AgentError: something listens there that runs as another user.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    sock.settimeout(START_TIMEOUT_SECS)
    try:
        sock.connect(path)
    except OSError:  # no socket, a stale one (refused), a full backlog, a path too long
        sock.close()
        return None
    uid = peer_uid(sock)
    if uid != os.geteuid():
        sock.close()
        raise AgentError(
            f"the agent socket {path} is served by uid {uid}, not by this user ({os.geteuid()})"
        )
    return sock


def run_via_agent(argv: Sequence[str]) -> int | None:
    """Run ``sealpod <argv>`` in the agent; its exit status, or None to start without it
    (not a run line, ``SEALPOD_AGENT=off``, or no agent answering in ``auto`` mode).

    Raises:
        AgentError: ``require`` mode and no agent; the agent refused the request or vanished.
    """
    if not is_run_line(argv):  # a bad $SEALPOD_AGENT must not break other commands
        return None
    mode = agent_mode()
    if mode == "off":
        return None
    path = socket_path()
    sock = connect(path) if os.path.exists(path) else None
    if sock is None:
        if mode == "require":
            raise AgentError(
                f"no sealpod agent answers at {path} ({AGENT_ENV}=require): start one with"
                " `sealpod agent serve`"
            )
        return None
    with sock:
        umask = os.umask(0o022)
        os.umask(umask)
        try:
            request = protocol.run_request(list(argv), dict(os.environ), umask)
        except AgentError:
            if mode == "require":
                raise
            return None  # an environment too large for one message: start here instead
        try:
            with _descriptors() as fds:
                socket.send_fds(sock, [request], fds)
        except OSError as exc:  # the agent went away, or the message does not fit its socket
            if mode == "require":
                raise AgentError(f"cannot hand the run to the sealpod agent: {exc}") from exc
            return None  # nothing was handed over: start here instead
        with _forwarding(sock):
            return _wait(sock)


@contextlib.contextmanager
def _descriptors() -> Iterator[list[int]]:
    """This process's stdin, stdout, stderr (``/dev/null`` for a closed one) and its working
    directory, as descriptors to pass."""
    opened: list[int] = []
    fds: list[int] = []
    try:
        for fd in (0, 1, 2):
            try:
                os.fstat(fd)
                fds.append(fd)
            except OSError:
                null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                opened.append(null)
                fds.append(null)
        cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        opened.append(cwd)
        fds.append(cwd)
        yield fds
    finally:
        for fd in opened:
            os.close(fd)


@contextlib.contextmanager
def _forwarding(sock: socket.socket) -> Iterator[None]:
    """Forward the signals ``sealpod run`` forwards to the pod's process in the agent."""

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(OSError):  # never block in a handler on a wedged agent
            sock.send(protocol.encode({"signal": signum}), socket.MSG_DONTWAIT)

    previous = {sig: signal.signal(sig, forward) for sig in protocol.FORWARDED}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _wait(sock: socket.socket) -> int:
    """The exit status the agent reports: ``started`` within the socket's timeout, then the
    exit status whenever the pod ends.

    Raises:
        AgentError: the agent refused the request, did not start it in time, or closed the
            connection without a status.
    """
    started = False
    while True:
        try:
            data = sock.recv(protocol.MAX_MESSAGE + 1)
        except TimeoutError:
            raise AgentError(
                f"the sealpod agent did not start the run in {sock.gettimeout():g} s (is it"
                f" stopped?); {AGENT_ENV}=off starts without it"
            ) from None
        except OSError as exc:
            raise AgentError(f"the connection to the sealpod agent failed: {exc}") from exc
        if not data:
            raise AgentError(
                "the sealpod agent closed the connection before the pod ended (was it stopped?)"
            )
        reply = protocol.parse_reply(data)
        if reply.error is not None:
            raise AgentError(f"the sealpod agent refused the run: {reply.error}")
        if reply.exit is not None:
            return reply.exit
        if reply.started is None or started:
            raise AgentError("agent reply: expected the pod's start, then its exit status")
        started = True
        sock.settimeout(None)  # the pod runs as long as it runs


def agent_status(path: str | None = None) -> dict[str, object]:
    """The status document of the agent at ``path`` (default: this home's).

    Raises:
        AgentError: no agent answers there, or its answer is malformed.
    """
    path = path or socket_path()
    sock = connect(path)
    if sock is None:
        raise AgentError(f"no sealpod agent answers at {path}")
    with sock:
        try:
            sock.send(protocol.encode({"v": protocol.VERSION, "op": "status"}))
            data = sock.recv(protocol.MAX_MESSAGE + 1)
        except OSError as exc:
            raise AgentError(f"the sealpod agent at {path} did not answer: {exc}") from exc
    reply = protocol.parse_reply(data) if data else None
    if reply is None or reply.status is None:
        raise AgentError(f"the sealpod agent at {path} sent no status")
    return reply.status
