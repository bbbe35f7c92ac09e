"""Encrypted volumes: sealpod's FUSE mount beside gocryptfs, and the library beside raw AES-GCM.

Run: ``.venv/bin/python bench/volume_bench.py [--size-mib 512] [--dir /var/tmp]`` (as root:
FUSE mounts; gocryptfs from the Debian package). Everything runs in one job on the same disk:

* FUSE: streaming write of SIZE MiB in 128 KiB blocks + fsync, streaming read after a remount,
  untar of a generated source tree, ``ls -lR`` after a remount, ``rm -rf``;
* library: ``Volume`` write (1 MiB blocks + sync) and read of SIZE MiB, beside AES-256-GCM on
  the same data in one call per MiB and in one call per 4 KiB node (what the volume does);
* storage overhead of the SIZE MiB file for both.

Goals from issue 6: FUSE streaming >= 70 % of gocryptfs, library >= 1 GB/s, overhead <= 1.5 %.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import median, table

from sealpod.volume import UnsafeNoFreshness, create_volume, open_volume

BLOCK = 128 * 1024
MIB = 1 << 20


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(*cmd: str | Path) -> None:
    subprocess.run([str(c) for c in cmd], check=True, capture_output=True, timeout=600)


class Fs:
    """One encrypted file system under test: mount, unmount, and where it stores ciphertext."""

    name = ""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.point = work / "mnt"
        self.point.mkdir(parents=True)

    def mount(self) -> None:
        raise NotImplementedError

    def unmount(self) -> None:
        raise NotImplementedError

    def storage_of(self, logical_name: str) -> int:
        raise NotImplementedError


class GocryptFs(Fs):
    name = "gocryptfs"

    def __init__(self, work: Path) -> None:
        super().__init__(work)
        self.cipher = work / "cipher"
        self.cipher.mkdir()
        self.password = work / "password"
        self.password.write_text("benchmark password\n")
        run("gocryptfs", "-init", "-q", "-passfile", self.password, self.cipher)

    def mount(self) -> None:
        run("gocryptfs", "-q", "-passfile", self.password, self.cipher, self.point)

    def unmount(self) -> None:
        run("fusermount3", "-u", self.point)

    def storage_of(self, logical_name: str) -> int:
        # gocryptfs encrypts names; the largest ciphertext file is the streamed one.
        return max(p.stat().st_size for p in self.cipher.iterdir() if p.is_file())


class SealpodFs(Fs):
    name = "sealpod"

    def __init__(self, work: Path) -> None:
        super().__init__(work)
        self.volume = work / "volume"
        self.key_file = work / "key"
        self.counters = work / "counters"
        self.key_file.write_text(os.urandom(32).hex())
        self.key_file.chmod(0o600)
        run(sys.executable, "-m", "sealpod.cli.main", "volume", "create", self.volume,
            "--key-file", self.key_file, "--counter-dir", self.counters)  # fmt: skip

    def mount(self) -> None:
        run(sys.executable, "-m", "sealpod.cli.main", "volume", "mount", self.volume, self.point,
            "--key-file", self.key_file, "--counter-dir", self.counters)  # fmt: skip

    def unmount(self) -> None:
        run(sys.executable, "-m", "sealpod.cli.main", "volume", "unmount", self.point)

    def storage_of(self, logical_name: str) -> int:
        return max(p.stat().st_size for p in (self.volume / "files").iterdir())


def make_source_tarball(path: Path, files: int, seed: int = 1) -> int:
    """A generated source tree: nested dirs, mostly small text files, a few larger ones."""
    rng = random.Random(seed)
    total = 0
    words = [b"int", b"return", b"static", b"void", b"struct", b"if", b"for", b"#include"]
    with tarfile.open(path, "w") as tar:
        dirs = ["src"]
        for n in range(files):
            if n % 25 == 0:
                dirs.append(f"{rng.choice(dirs)}/d{n}")
                info = tarfile.TarInfo(dirs[-1])
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            size = int(rng.lognormvariate(8.3, 1.1)) % 400_000
            body = b" ".join(rng.choice(words) for _ in range(size // 5 + 1))[:size]
            info = tarfile.TarInfo(f"{rng.choice(dirs)}/file{n}.c")
            info.size = len(body)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(body))
            total += len(body)
    return total


def fuse_workloads(fs: Fs, size_mib: int, tarball: Path) -> dict[str, float]:
    block = os.urandom(BLOCK)
    results: dict[str, float] = {}
    fs.mount()
    try:
        target = fs.point / "stream.bin"

        def write() -> None:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                for _ in range(size_mib * MIB // BLOCK):
                    os.write(fd, block)
                os.fsync(fd)
            finally:
                os.close(fd)

        results["write"] = size_mib / timed(write)
        fs.unmount()
        fs.mount()

        def read() -> None:
            fd = os.open(target, os.O_RDONLY)
            try:
                while os.read(fd, BLOCK):
                    pass
            finally:
                os.close(fd)

        results["read"] = size_mib / timed(read)
        results["untar"] = timed(lambda: run("tar", "-xf", tarball, "-C", fs.point))
        fs.unmount()
        fs.mount()
        results["ls -lR"] = timed(
            lambda: subprocess.run(
                ["ls", "-lR", fs.point / "src"], check=True, stdout=subprocess.DEVNULL
            )
        )
        results["rm -rf"] = timed(lambda: shutil.rmtree(fs.point / "src"))
        fs.unmount()
    except BaseException:
        subprocess.run(["fusermount3", "-uz", str(fs.point)], capture_output=True, check=False)
        raise
    results["overhead"] = (fs.storage_of("stream.bin") - size_mib * MIB) / (size_mib * MIB)
    return results


def library_workloads(work: Path, size_mib: int) -> dict[str, float]:
    data = os.urandom(MIB)
    key = os.urandom(32)
    work.mkdir(parents=True, exist_ok=True)
    path = work / "libvol"
    create_volume(path, key, counter=UnsafeNoFreshness())
    out: dict[str, float] = {}
    with open_volume(path, key, counter=UnsafeNoFreshness()) as vol:

        def write() -> None:
            with vol.open("big", "wb") as f:
                for _ in range(size_mib):
                    f.write(data)
                f.fsync()

        out["library write"] = size_mib / timed(write)
    with open_volume(path, key, counter=UnsafeNoFreshness(), readonly=True) as vol:

        def read() -> None:
            with vol.open("big", "rb") as f:
                while f.read(MIB):
                    pass

        out["library read"] = size_mib / timed(read)
    aead = AESGCM(key)
    nonce = bytes(12)
    out["AES-GCM 1 MiB calls"] = size_mib / timed(
        lambda: [aead.encrypt(nonce, data, None) for _ in range(size_mib)]
    )
    view = memoryview(data)
    node_out = bytearray(4096 + 16)

    def per_node() -> None:
        for _ in range(size_mib):
            for at in range(0, MIB, 4096):
                aead.encrypt_into(nonce, view[at : at + 4096], b"", node_out)

    out["AES-GCM 4 KiB calls"] = size_mib / timed(per_node)
    return out


def _medians(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {key: median([r[key] for r in rounds]) for key in rounds[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--files", type=int, default=3000, help="files in the source tree")
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds (gocryptfs and sealpod alternate); medians"
    )
    args = parser.parse_args()
    for tool in ("gocryptfs", "fusermount3", "tar"):
        if shutil.which(tool) is None:
            sys.exit(f"volume_bench: {tool} is not installed")
    with tempfile.TemporaryDirectory(prefix="sealpod-volume-bench-", dir=args.dir) as tmp:
        work = Path(tmp)
        tarball = work / "src.tar"
        source_bytes = make_source_tarball(tarball, args.files)
        rounds: dict[str, list[dict[str, float]]] = {"gocryptfs": [], "sealpod": []}
        lib_rounds: list[dict[str, float]] = []
        for n in range(args.repeat):
            for cls in (GocryptFs, SealpodFs):
                fs = cls(work / f"{cls.name}{n}")
                rounds[cls.name].append(fuse_workloads(fs, args.size_mib, tarball))
                shutil.rmtree(work / f"{cls.name}{n}")
            lib_rounds.append(library_workloads(work / f"lib{n}", args.size_mib))
            shutil.rmtree(work / f"lib{n}")
    g, s = _medians(rounds["gocryptfs"]), _medians(rounds["sealpod"])
    lib = _medians(lib_rounds)
    rows: list[list[object]] = []
    for name, unit in (("write", "MiB/s"), ("read", "MiB/s")):
        rows.append([f"stream {name} {args.size_mib} MiB", unit, g[name], s[name],
                     f"{s[name] / g[name]:.0%}"])  # fmt: skip
    for name in ("untar", "ls -lR", "rm -rf"):
        rows.append([f"{name} ({args.files} files, {source_bytes // MIB} MiB)", "s", g[name],
                     s[name], f"{g[name] / s[name]:.0%}"])  # fmt: skip
    rows.append(["storage overhead", "%", g["overhead"] * 100, s["overhead"] * 100, ""])
    table(f"FUSE: gocryptfs vs sealpod, median of {args.repeat} (same disk; last column: "
          "sealpod speed as % of gocryptfs)",
          ["workload", "unit", "gocryptfs", "sealpod", "sealpod/gocryptfs"], rows)  # fmt: skip
    lib_rows: list[list[object]] = [[name, "MiB/s", value] for name, value in lib.items()]
    table(f"library vs raw AES-256-GCM, median of {args.repeat} (same data, same process)",
          ["workload", "unit", "value"],
          lib_rows)  # fmt: skip


if __name__ == "__main__":
    main()
