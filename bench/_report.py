"""Shared output for benchmarks: a table that puts sealpod beside its reference, same run."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from collections.abc import Sequence


def machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}"


def percentile(samples: Sequence[float], q: float) -> float:
    """q in [0, 100]; nearest-rank on the sorted samples."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples) if samples else float("nan")


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print an aligned plain-text table (and JSON lines when BENCH_JSON=1)."""
    cells = [list(map(str, header))] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n== {title} ({machine()})")
    for i, r in enumerate(cells):
        print(
            "  ".join(
                c.rjust(w) if j else c.ljust(w)
                for j, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
        if i == 0:
            print("  ".join("-" * w for w in widths))
    if os.environ.get("BENCH_JSON") == "1":
        for row in rows:
            json.dump(dict(zip(header, row, strict=True)), sys.stdout, default=str)
            print()
    sys.stdout.flush()


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)
