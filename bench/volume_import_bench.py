"""Peak memory and time of ``volume import`` of a large tree, beside a plain copy of the same tree.

Run: ``.venv/bin/python bench/volume_import_bench.py [--files 8135] [--mib 227] [--dir /var/tmp]``

The tree has the shape of the one in issue 16.9 (8,135 files, 227 MB): log-normal file sizes
(median ~12 KB, mean 28 KB, a tail to a few MiB) in nested directories. Each workload runs in
a fresh child process so that its peak RSS (``ru_maxrss`` from ``wait4``) is its own:

* reference: ``shutil.copytree`` of the tree into a plain directory (Python's own baseline);
* sealpod: ``import_tree`` into a new volume (what ``sealpod volume import`` runs).

Goal (issue 16.9): sealpod's peak RSS <= 200 MB for this import (it was 954 MB).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import table

MIB = 1 << 20

CHILD_COPY = """
import shutil, sys
shutil.copytree(sys.argv[1], sys.argv[2], symlinks=True)
"""

CHILD_IMPORT = """
import os, sys
from pathlib import Path
from sealpod.volume import UnsafeNoFreshness, create_volume, open_volume
from sealpod.volume.transfer import import_tree
key = os.urandom(32)
create_volume(Path(sys.argv[2]), key, counter=UnsafeNoFreshness())
with open_volume(Path(sys.argv[2]), key, counter=UnsafeNoFreshness()) as vol:
    import_tree(vol, Path(sys.argv[1]))
"""


def make_tree(root: Path, files: int, total_mib: int, seed: int = 16) -> int:
    """Write ``files`` files totalling about ``total_mib`` MiB; return the bytes written."""
    rng = random.Random(seed)
    # Log-normal sizes (median ~12 KB, a long tail to a few MiB), scaled to the total: the
    # shape of a source tree or a package directory.
    raw = [rng.lognormvariate(9.4, 1.3) for _ in range(files)]
    scale = total_mib * MIB / sum(raw)
    sizes = [int(x * scale) for x in raw]
    rng.shuffle(sizes)
    written = 0
    chunk = os.urandom(MIB)
    for n, size in enumerate(sizes):
        d = root / f"pkg{n % 37}" / f"mod{n % 11}" / f"sub{n % 5}"
        d.mkdir(parents=True, exist_ok=True)
        with open(d / f"file{n}.dat", "wb") as f:
            left = size
            while left:
                part = chunk[: min(left, MIB)]
                f.write(part)
                left -= len(part)
        written += size
    return written


def measure(code: str, *args: Path) -> tuple[float, float]:
    """Run ``code`` in a child Python; return (seconds, peak RSS in MiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, *map(str, args)])
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"child failed with {proc.returncode}")
    return elapsed, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=8135)
    parser.add_argument("--mib", type=int, default=217, help="total size (227 MB = 217 MiB)")
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="sealpod-import-bench-") as tmp:
        work = Path(tmp)
        size = make_tree(work / "tree", args.files, args.mib)
        copy_secs, copy_rss = measure(CHILD_COPY, work / "tree", work / "copy")
        vol_secs, vol_rss = measure(CHILD_IMPORT, work / "tree", work / "vol")
    table(
        f"import of {args.files} files, {size / 1e6:.0f} MB",
        ["workload", "seconds", "peak RSS MiB"],
        [
            ["reference: shutil.copytree", f"{copy_secs:.1f}", f"{copy_rss:.0f}"],
            ["sealpod: import_tree", f"{vol_secs:.1f}", f"{vol_rss:.0f}"],
        ],
    )
    print(f"goal: sealpod peak RSS <= 200 MB ({200e6 / MIB:.0f} MiB): "
          f"{'met' if vol_rss * MIB <= 200e6 else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    main()
