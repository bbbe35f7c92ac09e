"""Bundle build throughput beside raw single-threaded hashlib.sha256 over the same files.

Generates a rootfs (default ~1 GiB: many small files in nested directories plus a few large
ones) in a temporary directory, then, in the same run and on the same warm page cache:

* ``raw sha256``: one thread, sorted walk, open + 1 MiB reads + hashlib.sha256 — the reference;
* ``sealpod build``: ``build_bundle`` (copy into the bundle, hash every file, manifest, sign);
* ``sealpod hash``: the hashing stage alone, in place (what a build from an archive does after
  unpacking it, and what verify-bundle does);
* ``sealpod verify``: ``verify_bundle`` on the result.

Each measurement is the best of ``--repeat`` runs. Usage::

    .venv/bin/python bench/build_bench.py                 # ~1 GiB
    .venv/bin/python bench/build_bench.py --size-mib 64   # quick
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import table

from sealpod.build.bundle import build_bundle, remove_tree, verify_bundle
from sealpod.build.hashing import default_workers, hash_tree
from sealpod.build.keys import KeyType, generate_key
from sealpod.build.manifest import TrustedFilter
from sealpod.spec.model import parse_spec

MiB = 1 << 20
SMALL_SHARE = 0.6  # of the bytes, in small files
LARGE_FILES = 4
FILES_PER_DIR = 64


def generate(root: Path, size: int, seed: int = 7) -> tuple[int, int]:
    """Write a rootfs of about ``size`` bytes; returns (file count, bytes)."""
    rng = random.Random(seed)
    (root / "app/bin").mkdir(parents=True)
    run = root / "app/bin/run"
    run.write_bytes(b"#!/bin/sh\nexec true\n")
    run.chmod(0o755)
    count, total = 1, run.stat().st_size
    small_budget = int(size * SMALL_SHARE)
    directory = root
    while total < small_budget:
        if count % FILES_PER_DIR == 0:
            directory = root / "usr" / f"lib{count // 4096}" / f"pkg{count // FILES_PER_DIR}"
            directory.mkdir(parents=True, exist_ok=True)
        n = min(int(rng.lognormvariate(9.5, 1.2)), 256 * 1024)  # median ~13 KiB
        (directory / f"f{count}.so").write_bytes(rng.randbytes(n))
        count, total = count + 1, total + n
    large = (size - total) // LARGE_FILES
    (root / "data").mkdir()
    for i in range(LARGE_FILES):
        with (root / "data" / f"blob{i}.bin").open("wb") as fh:
            left = large
            while left:
                chunk = min(left, 8 * MiB)
                fh.write(rng.randbytes(chunk))
                left -= chunk
        count, total = count + 1, total + large
    return count, total


def raw_sha256(root: Path) -> int:
    """The reference: every regular file, sorted, one thread, 1 MiB reads."""
    done = 0
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(directory, name)
            if os.path.islink(path):
                continue
            digest = hashlib.sha256()
            with open(path, "rb", buffering=0) as fh:
                while chunk := fh.read(MiB):
                    digest.update(chunk)
                    done += len(chunk)
    return done


def best_of(
    repeat: int, fn: Callable[[], object], before: Callable[[], None] | None = None
) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of the fastest of ``repeat`` runs."""
    runs = []
    for _ in range(repeat):
        if before is not None:
            before()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        fn()
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = after.ru_utime - usage.ru_utime + after.ru_stime - usage.ru_stime
        runs.append((wall, cpu))
    return min(runs)


def inode_cost(where: Path, count: int = 500) -> float:
    """Seconds to create one empty file here: the floor under any copy of many small files."""
    where.mkdir()
    started = time.perf_counter()
    for i in range(count):
        os.close(os.open(where / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    elapsed = time.perf_counter() - started
    shutil.rmtree(where)
    return elapsed / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="rootfs size (default 1024)")
    parser.add_argument("--jobs", type=int, default=None, help="sealpod threads (default: CPUs)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per measurement (best kept)")
    parser.add_argument("--dir", type=Path, default=None, help="where to make the temp tree")
    args = parser.parse_args()

    load_before = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="sealpod-bench-", dir=args.dir) as tmp:
        work = Path(tmp)
        rootfs, out = work / "rootfs", work / "bundle"
        started = time.perf_counter()
        files, size = generate(rootfs, args.size_mib * MiB)
        took = time.perf_counter() - started
        print(f"generated {files} files, {size / MiB:.0f} MiB in {took:.1f} s")
        spec = parse_spec(
            {"image": {"source": str(rootfs)}, "process": {"entrypoint": "/app/bin/run"},
             "identity": {"product_id": 1, "svn": 1}}
        )  # fmt: skip
        key = generate_key(KeyType.ED25519)
        when = datetime(2025, 1, 1, tzinfo=UTC)

        def clear() -> None:
            if out.exists():
                remove_tree(out)

        def build() -> None:
            build_bundle(spec, image=rootfs, key=key, out=out, signed_at=when, workers=args.jobs)

        def hash_only() -> None:
            hash_tree(rootfs, trusted=TrustedFilter(("/",)), strict=True, workers=args.jobs)

        raw_sha256(rootfs)  # warm the page cache for everyone alike
        t_raw = best_of(args.repeat, lambda: raw_sha256(rootfs))
        copy_dir = work / "copy"
        t_copy = best_of(
            args.repeat,
            lambda: shutil.copytree(rootfs, copy_dir, symlinks=True),
            before=lambda: shutil.rmtree(copy_dir, ignore_errors=True),
        )
        shutil.rmtree(copy_dir, ignore_errors=True)
        t_build = best_of(args.repeat, build, before=clear)
        t_hash = best_of(args.repeat, hash_only)
        t_verify = best_of(args.repeat, lambda: verify_bundle(out, workers=args.jobs))
        clear()
        per_inode = inode_cost(work / "inodes")

    mib = size / MiB
    threads = args.jobs or default_workers()

    def row(what: str, measured: tuple[float, float]) -> list[object]:
        wall, cpu = measured
        return [what, round(mib), wall, mib / wall, f"{t_raw[0] / wall:.0%}", cpu]

    table(
        f"bundle build, {files} files, sealpod with {threads} threads (best of {args.repeat})",
        ["what", "MiB", "seconds", "MiB/s", "vs raw", "CPU s"],
        [
            row("raw sha256, 1 thread (reference)", t_raw),
            row("copy only: shutil.copytree (reference)", t_copy),
            row("sealpod build (copy + hash + sign)", t_build),
            row("sealpod hash in place", t_hash),
            row("sealpod verify-bundle", t_verify),
        ],
    )
    print(
        f"creating one file here costs {per_inode * 1e6:.0f} us, so copying {files} files costs"
        f" at least {per_inode * files:.2f} s before any byte is hashed"
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average before / after: {load_before} / {load} (other processes share the CPUs)")


if __name__ == "__main__":
    main()
