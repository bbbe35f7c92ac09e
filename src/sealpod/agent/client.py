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
from collections.abc import Iterator, Sequence

from sealpod._home import raw_home
from sealpod.agent import protocol
from sealpod.errors import AgentError

AGENT_ENV = "SEALPOD_AGENT"
MODES = ("auto", "off", "require")
#: Root options that may come before ``run`` on a line the agent takes.
_ROOT_FLAGS = frozenset({"--debug"})
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def socket_path(environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """The agent's socket: ``$SEALPOD_HOME/run/agent.sock``."""
    return os.path.join(os.path.expanduser(raw_home(environ)), "run", "agent.sock")


def agent_mode(environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
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
    """A connection to the agent at ``path``; None when no agent listens there.

    Raises:
        AgentError: something listens there that runs as another user.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except OSError:  # no socket, a stale one (connection refused), a path too long
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
    mode = agent_mode()
    if mode == "off" or not is_run_line(argv):
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
        with _descriptors() as fds:
            socket.send_fds(sock, [request], fds)
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
        with contextlib.suppress(OSError):
            sock.send(protocol.encode({"signal": signum}))

    previous = {sig: signal.signal(sig, forward) for sig in protocol.FORWARDED}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _wait(sock: socket.socket) -> int:
    """The exit status the agent reports.

    Raises:
        AgentError: the agent refused the request, or closed the connection without a status.
    """
    data = sock.recv(protocol.MAX_MESSAGE + 1)
    if not data:
        raise AgentError(
            "the sealpod agent closed the connection before the pod ended (was it stopped?)"
        )
    reply = protocol.parse_reply(data)
    if reply.error is not None:
        raise AgentError(f"the sealpod agent refused the run: {reply.error}")
    if reply.exit is None:
        raise AgentError("agent reply: no exit status")
    return reply.exit


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
        sock.settimeout(10)
        try:
            sock.send(protocol.encode({"v": protocol.VERSION, "op": "status"}))
            data = sock.recv(protocol.MAX_MESSAGE + 1)
        except OSError as exc:
            raise AgentError(f"the sealpod agent at {path} did not answer: {exc}") from exc
    reply = protocol.parse_reply(data) if data else None
    if reply is None or reply.status is None:
        raise AgentError(f"the sealpod agent at {path} sent no status")
    return reply.status
