"""Start latency of `sealpod run`, split by phase, beside bare bubblewrap and podman (runc) on
the same rootfs, in the same run.

The pod: a static-busybox rootfs whose entrypoint prints one line at once; it gets an env
secret and a file secret from a real `sealpod kms serve --trust-sim` on 127.0.0.1, and
(``--volume``, as root) an encrypted volume. "Start" is the wall time from spawning the command
to reading the workload's first line: the workload's first instruction, plus one write.

Rows:

* ``bwrap (bare)``: the same rootfs under bubblewrap with the same namespaces, no sealpod;
* ``podman run --network none``: the same rootfs with ``--rootfs`` (runc), where podman exists;
* ``python (bare)`` and ``python + run's libraries``: the interpreter alone, then importing
  the libraries `sealpod run` cannot start without (typer, rich, pydantic, cryptography, httpx,
  joserfc) and printing — the floor any Python implementation of the command pays;
* ``sealpod run``: the whole start; then its phases from ``--json`` events, and
  ``sealpod overhead`` = start - attest - verify (what sealpod adds besides the attestation
  round trip and the rootfs hashing: interpreter start and imports, plan, provision, volumes,
  sandbox). Goals: overhead median <= 100 ms; whole start <= 2 x podman.

Usage::

    .venv/bin/python bench/run_bench.py [--rounds 15] [--volume]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "tests" / "e2e"))

from _report import median, percentile, table  # noqa: E402
from pod_harness import (  # noqa: E402
    SEALPOD,
    Kms,
    Pod,
    build_pod,
    busybox_rootfs,
    run_args,
    start_kms,
)

FIRST = "#!/bin/sh\necho started\n"
SPEC = """
[process]
entrypoint = "/app/first.sh"
user = "app"
[process.env]
DB_PASSWORD = { secret = "db-password" }
[[files]]
path = "/run/secrets/token"
secret = "api-token"
[identity]
product_id = 1
svn = 1
"""
VOLUME = """[[volumes]]
path = "/data"
name = "benchdata"
"""


def first_line(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """Seconds until the command prints its first line, and its stderr (after it ends)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env or dict(os.environ)
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    took = time.perf_counter() - started
    _, err = proc.communicate(timeout=120)
    if line.strip() != b"started":
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}):\n{err.decode()}")
    return took, err.decode()


def bare_bwrap(rootfs: Path) -> list[str]:
    return ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--uid", "1000",
            "--gid", "1000", "--ro-bind", str(rootfs), "/", "--proc", "/proc", "--dev", "/dev",
            "--tmpfs", "/tmp", "--tmpfs", "/run", "--", "/app/first.sh"]  # fmt: skip


def podman_argv(rootfs: Path, conf: Path) -> list[str] | None:
    if shutil.which("podman") is None:
        return None
    conf.write_text(
        '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
        '[engine]\nruntime = "runc"\n'
    )
    return ["podman", "run", "--rm", "--network", "none", "--user", "1000:1000",
            "--rootfs", str(rootfs), "/app/first.sh"]  # fmt: skip


FLOOR_IMPORTS = (
    "import typer, rich.console, httpx, joserfc.jwe, tenacity; from pydantic import BaseModel; "
    "import cryptography.hazmat.primitives.asymmetric.ec; print('started')"
)


def phases(stderr: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in stderr.splitlines():
        if line.startswith('{"'):
            event = json.loads(line)
            if event.get("event") == "phase":
                out[str(event["phase"])] = float(event["duration_ms"]) / 1000
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--volume", action="store_true", help="give the pod a volume (root)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sealpod-run-bench-") as tmp:
        work = Path(tmp)
        os.environ["SEALPOD_HOME"] = str(work / "home")
        (work / "home").mkdir()
        rootfs = busybox_rootfs(work / "rootfs", {"/app/first.sh": FIRST})
        pod: Pod = build_pod(work, SPEC + (VOLUME if args.volume else ""), rootfs)
        kms: Kms = start_kms(work / "home")
        try:
            kms.put_secret("db-password", b"bench-password")
            kms.put_secret("api-token", b"bench-token")
            names = ["db-password", "api-token"]
            if args.volume:
                kms.put_secret("volume.benchdata", generate="bytes:32")
                names.append("volume.benchdata")
            kms.allow(pod, names)
            measure(args.rounds, rootfs, pod, kms, work)
        finally:
            kms.stop()


def start_agent(home: Path) -> subprocess.Popen[bytes]:
    """``sealpod agent serve`` for ``home``, once its socket answers."""
    proc = subprocess.Popen([str(SEALPOD), "agent", "serve"], stderr=subprocess.PIPE)
    sock = home / "run" / "agent.sock"
    deadline = time.monotonic() + 60
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            assert proc.stderr is not None
            raise SystemExit(f"sealpod agent serve failed:\n{proc.stderr.read().decode()}")
        time.sleep(0.05)
    return proc


def measure(rounds: int, rootfs: Path, pod: Pod, kms: Kms, work: Path) -> None:
    conf = work / "containers.conf"
    podman = podman_argv(rootfs, conf)
    podman_env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    runs: dict[str, list[float]] = {"bwrap": [], "podman": [], "python": [], "floor": []}
    python = [sys.executable, "-c", "print('started')"]
    floor = [sys.executable, "-c", FLOOR_IMPORTS]
    parts: dict[str, dict[str, list[float]]] = {"cold": {}, "agent": {}}
    modes = {"cold": {**os.environ, "SEALPOD_AGENT": "off"},
             "agent": {**os.environ, "SEALPOD_AGENT": "require"}}  # fmt: skip
    sealpod = run_args(pod, kms, "--json", "--volume-dir", str(work / "volumes"))
    agent = start_agent(Path(os.environ["SEALPOD_HOME"]))
    try:
        for env in modes.values():
            first_line(sealpod, env)  # warm the page cache, the KMS and the agent
        for _ in range(rounds):  # interleaved, so drift hits every row alike
            runs["bwrap"].append(first_line(bare_bwrap(rootfs))[0])
            runs["python"].append(first_line(python)[0])
            runs["floor"].append(first_line(floor)[0])
            if podman is not None:
                runs["podman"].append(first_line(podman, podman_env)[0])
            for mode, env in modes.items():
                took, err = first_line(sealpod, env)
                split = phases(err)
                split["start"] = took
                split["overhead"] = took - split.get("attest", 0.0) - split.get("verify", 0.0)
                for name, value in split.items():
                    parts[mode].setdefault(name, []).append(value)
    finally:
        agent.terminate()
        agent.wait(timeout=60)

    def row(label: str, values: list[float]) -> list[object]:
        return [label, median(values) * 1000, percentile(values, 90) * 1000]

    rows = [row("bwrap (bare)", runs["bwrap"]), row("python (bare)", runs["python"]),
            row("python + run's libraries", runs["floor"])]  # fmt: skip
    if runs["podman"]:
        rows.append(row("podman run --network none (runc)", runs["podman"]))
    labels = {"cold": "sealpod run, no agent", "agent": "sealpod run through the agent"}
    for mode, label in labels.items():
        rows.append(row(f"{label} (whole start)", parts[mode]["start"]))
        for name in ("verify", "preflight", "attest", "provision", "volumes", "sandbox"):
            if name in parts[mode]:
                rows.append(row(f"  phase {name}", parts[mode][name]))
        rows.append(row("  sealpod overhead (start - attest - verify)", parts[mode]["overhead"]))
    table(f"start to first line, {rounds} rounds (ms)", ["what", "median", "p90"], rows)
    for mode, label in labels.items():
        if runs["podman"]:
            ratio = median(parts[mode]["start"]) / median(runs["podman"])
            print(f"{label} / podman: {ratio:.2f}x (goal <= 2x)")
        overhead = median(parts[mode]["overhead"]) * 1000
        print(f"{label}: overhead median {overhead:.0f} ms (goal <= 100 ms)")


if __name__ == "__main__":
    main()
