"""``sealpod agent serve``: one long-lived process per host (or confidential VM) that has
imported sealpod's runtime once and forks a fresh child for each ``sealpod run`` it is handed
(docs/agent.md).

The agent itself never runs a phase: it holds no bundle, no evidence, no secret. Each child
runs exactly the code a cold ``sealpod run`` runs, with the client's argv, environment, umask,
working directory and stdio, in a session of its own; it exits when the pod ends. The agent
relays the client's signals to the child and the child's exit status to the client; a client
that disappears gets its pod stopped (SIGTERM, then SIGKILL of the pod's process group after a
grace period), as a container engine stops a container whose client is gone.

Single-threaded by construction (a selector loop, signals through the wakeup fd): a process
that forks must not have threads, whose locks the child would inherit held.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import selectors
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from sealpod import __version__
from sealpod.agent import protocol
from sealpod.agent.client import is_run_line, peer_uid
from sealpod.errors import AgentError

#: Seconds a new connection has to send its request.
REQUEST_TIMEOUT_SECS = 5.0
#: Seconds between SIGTERM and SIGKILL when a pod's client vanished or the agent stops.
DEFAULT_GRACE_SECS = 10.0
DEFAULT_MAX_PODS = 64
#: Connections that have not sent their request yet; more are refused at once, so that a
#: flood of connections cannot use up the agent's descriptors.
MAX_PENDING = 64
#: Encoded bytes of a pod's command line that ``status`` shows (64 pods fit one message).
STATUS_ARGV_BYTES = 1024
#: Seconds the agent stops accepting when it has no descriptor left (EMFILE, ENFILE).
ACCEPT_PAUSE_SECS = 0.5
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_STOP_NUMBERS = frozenset(int(s) for s in _STOP_SIGNALS)
#: Blocked across a fork: until the child has dropped the agent's handlers and wakeup fd, a
#: signal to it would be swallowed, or written into the agent's wakeup pipe (a relayed SIGTERM
#: would then stop the agent). The child unblocks them once set up; they are then delivered.
_FORK_BLOCKED = frozenset({signal.SIGCHLD, *_STOP_SIGNALS, *protocol.FORWARDED})
#: Signals CPython itself ignores at start (a pod keeps them ignored, as a cold start does).
_PYTHON_IGNORES = frozenset({signal.SIGPIPE, signal.SIGXFSZ})
_ANCILLARY = socket.CMSG_SPACE(protocol.RUN_FDS * 4 + 4)

Runner = Callable[[list[str]], int]


@dataclass(slots=True)
class _Conn:
    sock: socket.socket
    deadline: float
    pod: int | None = None  # the child's pid once the run started


@dataclass(slots=True)
class _Pod:
    pid: int
    argv: tuple[str, ...]
    started: float
    conn: _Conn | None
    kill_at: float | None = None


@dataclass(slots=True)
class Agent:
    """The agent serving ``home``'s socket; :meth:`serve` runs it in the foreground.

    ``runner`` is what a child runs: the CLI's dispatcher, already imported and built.
    """

    home: Path
    runner: Runner
    log: Callable[[str], None]
    grace_secs: float = DEFAULT_GRACE_SECS
    max_pods: int = DEFAULT_MAX_PODS
    _selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    _pods: dict[int, _Pod] = field(default_factory=dict)
    _conns: dict[int, _Conn] = field(default_factory=dict)
    _listener: socket.socket | None = None
    _wakeup: tuple[int, int] | None = None
    _lock_fd: int | None = None
    _stopping: bool = False
    _accept_paused_until: float | None = None

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def socket_path(self) -> Path:
        return self.run_dir / "agent.sock"

    def serve(self, on_ready: Callable[[str], None] | None = None) -> None:
        """Serve until SIGTERM, SIGINT or SIGHUP, then stop every pod and return.

        Raises:
            AgentError: another agent serves this home, the run directory is not private, or
                the socket cannot be bound.
        """
        if threading.active_count() != 1:
            raise AgentError("the agent must be single-threaded before it forks pods")
        self._lock()
        try:
            self._install_signals()
            self._bind()
            self.log(f"serving {self.socket_path} (pid {os.getpid()}, sealpod {__version__})")
            if on_ready is not None:
                on_ready(str(self.socket_path))
            self._loop()
        finally:
            self._shutdown()

    # --- set-up ---------------------------------------------------------------------------------
    def _lock(self) -> None:
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(self.run_dir)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
            raise AgentError(
                f"{self.run_dir} must be a directory of this user with mode 0700 (it holds the"
                " agent's socket)"
            )
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.run_dir / "agent.lock", flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AgentError(f"another sealpod agent already serves {self.home}") from None
        self._lock_fd = fd

    def _bind(self) -> None:
        path = str(self.socket_path)
        if len(os.fsencode(path)) >= 108:
            raise AgentError(f"the agent socket path is too long for a UNIX socket: {path}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a stale socket: the lock says no agent serves it
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            listener.bind(path)
        except OSError as exc:
            listener.close()
            raise AgentError(f"cannot bind {path}: {exc.strerror or exc}") from exc
        finally:
            os.umask(old)
        listener.listen(64)
        listener.setblocking(False)
        self._listener = listener
        self._selector.register(listener, selectors.EVENT_READ, "listen")

    def _install_signals(self) -> None:
        read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wakeup = (read_fd, write_fd)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)  # a full pipe: already woken
        for sig in (signal.SIGCHLD, *_STOP_SIGNALS):
            signal.signal(sig, _note)  # the wakeup fd carries the number to the loop
        self._selector.register(read_fd, selectors.EVENT_READ, "wakeup")

    # --- the loop -------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not (self._stopping and not self._pods):
            for key, _ in self._selector.select(self._timeout()):
                if key.data == "listen":
                    self._accept()
                elif key.data == "wakeup":
                    self._signals()
                else:
                    self._readable(key.data)
            self._expire()

    def _timeout(self) -> float | None:
        deadlines = [c.deadline for c in self._conns.values() if c.pod is None]
        if self._accept_paused_until is not None:
            deadlines.append(self._accept_paused_until)
        deadlines += [p.kill_at for p in self._pods.values() if p.kill_at is not None]
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _signals(self) -> None:
        if self._wakeup is None:
            return
        try:
            numbers = os.read(self._wakeup[0], 512)
        except BlockingIOError:
            return
        if _STOP_NUMBERS.intersection(numbers) and not self._stopping:
            self._stop()
        self._reap()

    def _accept(self) -> None:
        if self._listener is None:  # stopping: a last readiness event of the closed socket
            return
        try:
            sock, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                # The connection stays in the backlog; the listener stays readable, so stop
                # watching it for a moment instead of spinning.
                self.log(f"cannot accept a connection: {exc.strerror or exc}; pausing")
                self._selector.unregister(self._listener)
                self._accept_paused_until = time.monotonic() + ACCEPT_PAUSE_SECS
            return
        sock.setblocking(False)
        if peer_uid(sock) != os.geteuid():
            self._refuse(sock, "the agent serves only its own user")
            return
        if sum(1 for c in self._conns.values() if c.pod is None) >= MAX_PENDING:
            self._refuse(sock, f"{MAX_PENDING} connections have not sent their request yet")
            return
        conn = _Conn(sock=sock, deadline=time.monotonic() + REQUEST_TIMEOUT_SECS)
        self._conns[sock.fileno()] = conn
        self._selector.register(sock, selectors.EVENT_READ, conn)

    def _readable(self, conn: _Conn) -> None:
        if conn.pod is None:
            self._request(conn)
            return
        try:
            data = conn.sock.recv(protocol.MAX_MESSAGE + 1)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client is gone: stop its pod
            self._drop(conn)
            pod = self._pods.get(conn.pod)
            if pod is not None:
                pod.conn = None
                self._terminate(pod)
            return
        with contextlib.suppress(AgentError, ProcessLookupError):
            os.kill(conn.pod, protocol.parse_control(data))

    def _request(self, conn: _Conn) -> None:
        try:
            data, ancillary, flags, _ = conn.sock.recvmsg(
                protocol.MAX_MESSAGE + 1, _ANCILLARY, socket.MSG_CMSG_CLOEXEC
            )
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        fds = _received_fds(ancillary)
        try:
            if not data:
                raise _Gone
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                raise AgentError("agent request: message or descriptors truncated")
            request = protocol.parse_request(data)
            if isinstance(request, protocol.StatusRequest):
                if fds:
                    raise AgentError("agent request: a status request carries no descriptors")
                self._send(conn, {"status": self.status()})
                self._drop(conn)
                return
            self._check_run(request, fds)
        except AgentError as exc:
            _close_all(fds)
            self._drop(conn, refusal=exc)
            return
        except _Gone:
            _close_all(fds)
            self._drop(conn)
            return
        self._fork(conn, request, fds)

    def _check_run(self, request: protocol.RunRequest, fds: list[int]) -> None:
        if self._stopping:
            raise AgentError("the agent is stopping")
        if len(fds) != protocol.RUN_FDS:
            raise AgentError(f"agent request: a run carries {protocol.RUN_FDS} descriptors")
        if any(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_PATH for fd in fds[:3]):
            raise AgentError("agent request: stdin, stdout and stderr must be open for I/O")
        if not stat.S_ISDIR(os.fstat(fds[3]).st_mode):
            raise AgentError("agent request: the working directory descriptor is not one")
        if not is_run_line(request.argv):
            raise AgentError("the agent runs `sealpod run` only")
        if len(self._pods) >= self.max_pods:
            raise AgentError(f"the agent already runs {self.max_pods} pods")

    def _fork(self, conn: _Conn, request: protocol.RunRequest, fds: list[int]) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, _FORK_BLOCKED)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORK_BLOCKED)
            _close_all(fds)
            self._drop(conn, refusal=AgentError(f"cannot fork a pod: {exc.strerror or exc}"))
            return
        if pid == 0:
            self._child(request, fds)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORK_BLOCKED)
        _close_all(fds)
        conn.pod = pid
        self._pods[pid] = _Pod(pid=pid, argv=request.argv, started=time.time(), conn=conn)
        self._send(conn, {"started": pid})  # the client waits for this before it waits long
        self.log(f"pod {pid} started")

    # --- the child ------------------------------------------------------------------------------
    def _child(self, request: protocol.RunRequest, fds: list[int]) -> NoReturn:
        """Become the client's ``sealpod run``: its stdio, directory, umask and environment;
        none of the agent's descriptors or signal handlers."""
        code = 70
        try:
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            # What started the agent may have ignored signals (`agent serve &` in a script
            # ignores SIGINT and SIGQUIT); a pod starts as from an interactive shell, with only
            # the two the interpreter itself ignores.
            for sig in signal.valid_signals():
                if sig not in _PYTHON_IGNORES and signal.getsignal(sig) is signal.SIG_IGN:
                    signal.signal(sig, signal.SIG_DFL)
            # A shell's empty mask, as a cold start has: what the fork blocked is delivered now.
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
            self._close_inherited()
            os.setsid()  # the agent's terminal and process group are not the pod's
            for target, fd in zip((0, 1, 2), fds[:3], strict=True):
                os.dup2(fd, target)
            # Line-buffered on a terminal, as the interpreter chooses at start for its stdout.
            with contextlib.suppress(AttributeError, OSError, ValueError):
                sys.stdout.reconfigure(line_buffering=os.isatty(1))  # type: ignore[union-attr]
            os.fchdir(fds[3])
            _close_all([fd for fd in fds if fd > 2])
            os.umask(request.umask)
            os.environ.clear()
            os.environ.update(request.env)
            sys.argv = ["sealpod", *request.argv]
            code = self.runner(list(request.argv))
        except SystemExit as exc:  # as the interpreter ends a cold start
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                code = 1
                with contextlib.suppress(OSError, ValueError):
                    sys.stderr.write(f"{exc.code}\n")
        except KeyboardInterrupt:  # a SIGINT before the command's own handling
            code = 128 + signal.SIGINT
        except BaseException as exc:  # a forked child must never return into the agent
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(f"sealpod agent: internal error: {type(exc).__name__}\n")
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
            os._exit(code)

    def _close_inherited(self) -> None:
        for conn in list(self._conns.values()):
            conn.sock.close()
        self._conns.clear()
        if self._listener is not None:
            self._listener.close()
        self._selector.close()
        if self._wakeup is not None:
            _close_all(list(self._wakeup))
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # the parent's descriptor keeps the lock

    # --- pods and connections -------------------------------------------------------------------
    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            pod = self._pods.pop(pid, None)
            if pod is None:
                continue  # an orphan reparented to us (we are a subreaper)
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code
            self.log(f"pod {pid} exited {code}")
            if pod.conn is not None:
                self._send(pod.conn, {"exit": code})
                self._drop(pod.conn)

    def _terminate(self, pod: _Pod) -> None:
        if pod.kill_at is None:
            pod.kill_at = time.monotonic() + self.grace_secs
            with contextlib.suppress(ProcessLookupError):
                os.kill(pod.pid, signal.SIGTERM)

    def _expire(self) -> None:
        now = time.monotonic()
        if self._accept_paused_until is not None and self._accept_paused_until <= now:
            self._accept_paused_until = None
            if self._listener is not None:
                self._selector.register(self._listener, selectors.EVENT_READ, "listen")
        for conn in [c for c in self._conns.values() if c.pod is None and c.deadline <= now]:
            self._drop(conn, refusal=AgentError("agent request: none sent in time"))
        for pod in self._pods.values():
            if pod.kill_at is not None and pod.kill_at <= now:
                self.log(f"pod {pod.pid} did not stop in {self.grace_secs:g} s: killed")
                try:
                    os.killpg(pod.pid, signal.SIGKILL)
                except ProcessLookupError:  # not yet the leader of its own session
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pod.pid, signal.SIGKILL)
                except PermissionError:
                    pass
                pod.kill_at = None  # once; its exit is reaped as any other

    def _stop(self) -> None:
        """Stop taking requests (new clients start without the agent) and stop every pod."""
        self._stopping = True
        self.log(f"stopping: {len(self._pods)} pod(s) to stop")
        if self._listener is not None:
            if self._accept_paused_until is None:
                self._selector.unregister(self._listener)
            self._accept_paused_until = None
            self._listener.close()
            self._listener = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)
        for pod in self._pods.values():
            self._terminate(pod)

    def _send(self, conn: _Conn, message: dict[str, object]) -> None:
        with contextlib.suppress(OSError):
            conn.sock.send(protocol.encode(message), socket.MSG_DONTWAIT)

    def _drop(self, conn: _Conn, *, refusal: AgentError | None = None) -> None:
        if refusal is not None:
            self.log(f"refused a request: {refusal.message}")
            self._send(conn, {"error": refusal.message, "code": refusal.code, "exit": 14})
        if self._conns.pop(conn.sock.fileno(), None) is not None:
            self._selector.unregister(conn.sock)
        conn.sock.close()

    def _refuse(self, sock: socket.socket, message: str) -> None:
        self.log(f"refused a connection: {message}")
        with contextlib.suppress(OSError):
            sock.send(protocol.encode({"error": message, "code": AgentError.code, "exit": 14}))
        sock.close()

    def status(self) -> dict[str, object]:
        """The agent and its pods: what ``sealpod agent status`` prints."""
        return {
            "pid": os.getpid(),
            "version": __version__,
            "socket": str(self.socket_path),
            "pods": [
                {"pid": p.pid, "argv": _shown(p.argv), "started": round(p.started, 3)}
                for p in self._pods.values()
            ],
        }

    def _shutdown(self) -> None:
        if self._listener is not None:
            self._listener.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)
        for conn in list(self._conns.values()):
            self._drop(conn)
        self._selector.close()
        if self._wakeup is not None:
            signal.set_wakeup_fd(-1)
            _close_all(list(self._wakeup))
        if self._lock_fd is not None:
            os.close(self._lock_fd)


class _Gone(Exception):
    """The client closed its connection before sending a request."""


def _note(_signum: int, _frame: object) -> None:
    """Signal handler of the agent: the wakeup fd already carried the number to the loop."""


def _received_fds(ancillary: Sequence[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % 4
            fds.extend(int.from_bytes(data[i : i + 4], sys.byteorder) for i in range(0, usable, 4))
    return fds


def _shown(argv: Sequence[str]) -> list[str]:
    """A pod's command line cut for the status document, which must fit one message even when
    every pod's line is near the request's limit."""
    shown: list[str] = []
    left = STATUS_ARGV_BYTES
    for arg in argv:
        cost = len(json.dumps(arg))  # as encoded: quotes, escapes
        if cost > left:
            shown.append(f"{arg[: max(0, left // 6)]}...")  # \uXXXX: six bytes a character
            break
        shown.append(arg)
        left -= cost + 1
    return shown


def _close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
