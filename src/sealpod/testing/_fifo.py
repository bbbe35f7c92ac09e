"""A thread that serves named pipes the way a kernel serves pseudo-files.

Real ``/dev/attestation`` and configfs-tsm files compute their contents when read and act when
written. A test tree imitates them with FIFOs: for an *input* the server keeps the read end
open and, each time a writer closes, hands the bytes written to a callback; for an *output* it
waits until a reader opens the pipe, asks a callback for the bytes and writes them. Inputs are
always drained before an output is answered, so "write inblob, then read outblob" sees the
effect of the write, as with the kernel. Callers use plain ``open``/``read``/``write``.

Only the server thread closes an input's descriptor: a FIFO removed by another thread is
retired and closed at the top of the next loop, after the poll that may still hold its number.
Closed from outside, the number could be reused at once by the caller's next ``open`` (a file
being hashed, say) and the server would read that file's bytes as pipe input.
"""

from __future__ import annotations

import errno
import os
import select
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

POLL_SECS = 0.002


class _Input:
    __slots__ = ("buf", "fd", "on_write", "path")

    def __init__(self, path: Path, on_write: Callable[[bytes], None]) -> None:
        self.path = path
        self.on_write = on_write
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.buf = bytearray()


class FifoServer:
    """Serve input and output FIFOs from one background thread (see module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._inputs: dict[Path, _Input] = {}
        self._outputs: dict[Path, Callable[[], bytes]] = {}
        self._retired: list[int] = []  # descriptors of removed inputs, closed by the thread
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[BaseException] = []

    # --- registration ---------------------------------------------------------------------------
    def add_input(self, path: Path, on_write: Callable[[bytes], None]) -> None:
        os.mkfifo(path, 0o600)
        with self._lock:
            self._inputs[path] = _Input(path, on_write)

    def add_output(self, path: Path, on_read: Callable[[], bytes]) -> None:
        os.mkfifo(path, 0o600)
        with self._lock:
            self._outputs[path] = on_read

    def remove_under(self, directory: Path) -> None:
        """Stop serving every FIFO inside ``directory`` and delete them."""
        with self._lock:
            for path in [p for p in self._inputs if p.parent == directory]:
                self._retired.append(self._inputs.pop(path).fd)
                path.unlink(missing_ok=True)
            for path in [p for p in self._outputs if p.parent == directory]:
                del self._outputs[path]
                path.unlink(missing_ok=True)

    # --- life cycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sealpod-fake-kernel", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            for inp in self._inputs.values():
                os.close(inp.fd)
            self._inputs.clear()
            self._outputs.clear()
            self._close_retired()

    def _close_retired(self) -> None:
        for fd in self._retired:
            os.close(fd)
        self._retired.clear()

    def __enter__(self) -> FifoServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- the loop -------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self._lock:
                    self._close_retired()
                self._drain(POLL_SECS)
                with self._lock:
                    outputs = list(self._outputs.items())
                for path, on_read in outputs:
                    self._serve(path, on_read)
            except Exception as exc:  # keep serving; tests inspect .errors
                self.errors.append(exc)

    def _drain(self, timeout: float) -> None:
        with self._lock:
            inputs = list(self._inputs.values())
        if not inputs:
            self._stop.wait(timeout)
            return
        poller = select.poll()
        by_fd = {}
        for inp in inputs:
            poller.register(inp.fd, select.POLLIN)
            by_fd[inp.fd] = inp
        for fd, _events in poller.poll(int(timeout * 1000)):
            self._read_input(by_fd[fd])

    def _read_input(self, inp: _Input) -> None:
        while True:
            try:
                chunk = os.read(inp.fd, 65536)
            except BlockingIOError:
                return  # writer still connected, nothing more yet
            except OSError:
                return
            if chunk:
                inp.buf += chunk
                continue
            # EOF: the writer closed. Deliver one write and re-arm the pipe.
            data, inp.buf = bytes(inp.buf), bytearray()
            vanished: OSError | None = None
            with self._lock:
                if self._inputs.get(inp.path) is not inp:
                    return
                os.close(inp.fd)
                try:
                    inp.fd = os.open(inp.path, os.O_RDONLY | os.O_NONBLOCK)
                except OSError as exc:
                    # The FIFO went away behind our back: stop serving it, and keep no closed
                    # number (the caller's next open may get it; polling or closing it again
                    # would reach that file).
                    del self._inputs[inp.path]
                    inp.fd = -1
                    vanished = exc
            if data:
                inp.on_write(data)
            if vanished is not None:
                raise vanished
            return

    def _serve(self, path: Path, on_read: Callable[[], bytes]) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno in (errno.ENXIO, errno.ENOENT):
                return  # nobody is reading (or it was just removed)
            raise
        try:
            self._drain(0)  # the reader wrote its inputs before opening this output
            try:
                data = on_read()
            except Exception:
                data = b""  # like an I/O error: the reader sees an empty file
            os.set_blocking(fd, True)
            view = memoryview(data)
            while view:
                try:
                    n = os.write(fd, view)
                except BrokenPipeError:
                    break
                view = view[n:]
            # Swap in a fresh FIFO before closing: this reader holds the old one until it sees
            # EOF, so the next open of ``path`` (next loop) cannot reach it and serve it twice.
            with self._lock:
                if path in self._outputs:  # not removed meanwhile
                    fresh = path.with_name(f".{path.name}.new")
                    os.mkfifo(fresh, 0o600)
                    os.replace(fresh, path)
        finally:
            os.close(fd)


class FifoServedFake:
    """Base of the fakes whose pseudo-files a :class:`FifoServer` serves: ``with fake:`` starts
    the server thread and stops it, and ``errors`` holds what the callbacks raised."""

    _server: FifoServer

    def __enter__(self) -> Self:
        self._server.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.stop()

    @property
    def errors(self) -> list[BaseException]:
        return self._server.errors
