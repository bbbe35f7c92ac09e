"""Latency of one small volume commit: an 8 KiB overwrite of a committed file, then ``sync()``.

This is the shape of a database's WAL flush (what `fsync` costs a PostgreSQL commit on a sealed
volume), with the counter store in memory so that only the volume's own work and its disk syncs
are measured. Beside it, in the same run and directory, the reference: the same 8 KiB written
and fdatasynced on a plain file, which is all a native WAL flush costs.

    .venv/bin/python bench/commit_bench.py [--commits 600] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import median, percentile, table

from sealpod.volume import MemoryFreshness, create_volume, open_volume

FILE_SIZE = 1 << 20
WRITE = 8192


def plain(work: Path, commits: int) -> list[float]:
    path = work / "plain.wal"
    path.write_bytes(os.urandom(FILE_SIZE))
    fd = os.open(path, os.O_RDWR)
    samples = []
    try:
        for i in range(commits):
            os.pwrite(fd, os.urandom(WRITE), (i % (FILE_SIZE // WRITE)) * WRITE)
            start = time.perf_counter()
            os.fdatasync(fd)
            samples.append(time.perf_counter() - start)
    finally:
        os.close(fd)
    return samples


def sealed(work: Path, commits: int) -> list[float]:
    key, store = os.urandom(32), MemoryFreshness()
    create_volume(work / "vol", key, counter=store)
    samples = []
    with open_volume(work / "vol", key, counter=store) as vol:
        vol.write_file("wal", os.urandom(FILE_SIZE))
        vol.sync()
        with vol.open("wal", "r+b") as f:
            for i in range(commits):
                f.seek((i % (FILE_SIZE // WRITE)) * WRITE)
                f.write(os.urandom(WRITE))
                start = time.perf_counter()
                vol.sync()
                samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commits", type=int, default=600)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        rows = []
        for name, run in (("plain file: pwrite + fdatasync", plain), ("volume commit", sealed)):
            ms = [s * 1e3 for s in run(work, args.commits)]
            rows.append([name, median(ms), percentile(ms, 90)])
    table(
        f"one 8 KiB commit, {args.commits} each, {args.dir}",
        ["what", "median ms", "p90 ms"],
        rows,
    )


if __name__ == "__main__":
    main()
