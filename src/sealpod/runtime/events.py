"""What ``sealpod run`` says while it works: one line per phase on stderr, or with ``--json``
one JSON object per line (``{"event": "phase", "phase", "outcome", "duration_ms", ...}``), so a
log collector or a test can follow a start without parsing prose. The workload's own output
goes to stdout/stderr untouched; these lines all start with ``sealpod:`` or ``{"event"``.
Never a secret value: events carry names, counts, codes and durations only.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from sealpod.errors import SealpodError

PHASES = ("verify", "attest", "provision", "volumes", "sandbox", "ready")


class Reporter:
    """Writes phase events to ``stream`` (stderr by default)."""

    def __init__(self, *, json_lines: bool = False, stream: TextIO | None = None) -> None:
        self.json_lines = json_lines
        self.stream = stream if stream is not None else sys.stderr
        self.durations_ms: dict[str, float] = {}

    def emit(self, event: str, **fields: object) -> None:
        """One event. Human form: ``sealpod: <phase> <outcome> (<ms> ms) <detail>``.

        Raises:
            Nothing: a closed stream is ignored.
        """
        try:
            if self.json_lines:
                self.stream.write(json.dumps({"event": event, **fields}, sort_keys=True) + "\n")
            else:
                self.stream.write(_human(event, fields) + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass

    @contextmanager
    def phase(self, name: str) -> Iterator[dict[str, object]]:
        """Time the block as phase ``name``; the yielded dict adds detail fields to the event.

        Raises:
            Whatever the block raises, after an ``error`` event naming its code.
        """
        detail: dict[str, object] = {}
        started = time.perf_counter()
        try:
            yield detail
        except SealpodError as exc:
            self._done(name, started, "error", {"code": exc.code, **detail})
            raise
        except KeyboardInterrupt:
            self._done(name, started, "interrupted", detail)
            raise
        self._done(name, started, "ok", detail)

    def _done(self, name: str, started: float, outcome: str, detail: dict[str, object]) -> None:
        ms = round((time.perf_counter() - started) * 1000, 1)
        self.durations_ms[name] = ms
        self.emit("phase", phase=name, outcome=outcome, duration_ms=ms, **detail)


def _human(event: str, fields: dict[str, object]) -> str:
    if event == "phase":
        rest = {k: v for k, v in fields.items() if k not in ("phase", "outcome", "duration_ms")}
        extra = " ".join(f"{k}={v}" for k, v in rest.items())
        line = f"sealpod: {fields['phase']} {fields['outcome']} ({fields['duration_ms']} ms)"
        return f"{line} {extra}".rstrip()
    parts = " ".join(f"{k}={v}" for k, v in fields.items())
    return f"sealpod: {event} {parts}".rstrip()
