"""kill -9 of a real KMS server in the middle of a stream of admin writes, 50 times over.

After every restart each acknowledged write (secret created, secret rotated, policy stored)
must be there with the value that was acknowledged, and at the end ``sealpod kms audit
--verify`` (the real CLI) must find the hash chain intact. Server processes are forked from a
pre-imported fork server (tests/e2e/kms_forkserver.py) so that 50 restarts take seconds.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

TRIALS = 50
BUDGET_SECS = 75.0
FORKSERVER = Path(__file__).with_name("kms_forkserver.py")
SEALPOD = Path(sys.executable).with_name("sealpod")


def value_of(name: str, version: int) -> bytes:
    return f"durable {name} v{version}".encode()


class ForkServer:
    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(FORKSERVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        assert self._line() == "ready"

    def _line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def serve(self, log: Path, *args: str) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write(" ".join(["serve", str(log), *args]) + "\n")
        self.proc.stdin.flush()
        return int(self._line())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def wait_ready(info: Path, pid: int, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if info.is_file():
            data = json.loads(info.read_text())
            if data.get("pid") == pid:
                url = str(data["url"])
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        return url
                except httpx.HTTPError:
                    pass
        time.sleep(0.01)
    raise AssertionError(f"server {pid} did not become ready")


@dataclass
class Ledger:
    """What the server acknowledged: secret name -> version, policy name -> secrets."""

    secrets: dict[str, int] = field(default_factory=dict)
    policies: dict[str, list[str]] = field(default_factory=dict)
    writes: int = 0


def writer(url: str, token: str, ledger: Ledger, rng: random.Random, stop: threading.Event) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    import base64

    with httpx.Client(base_url=url, headers=headers, timeout=5) as http:
        while not stop.is_set():
            op = rng.random()
            try:
                if op < 0.55 or not ledger.secrets:
                    name = f"s{len(ledger.secrets):04d}-{rng.randrange(1 << 30):08x}"
                    body = {"value": base64.b64encode(value_of(name, 1)).decode()}
                    r = http.put(f"/v1/admin/secrets/{name}", json=body)
                    if r.status_code == 201:
                        ledger.secrets[name] = 1
                elif op < 0.9:
                    name = rng.choice(sorted(ledger.secrets))
                    nxt = ledger.secrets[name] + 1
                    body = {"value": base64.b64encode(value_of(name, nxt)).decode()}
                    r = http.post(f"/v1/admin/secrets/{name}/rotate", json=body)
                    if r.status_code == 200:
                        assert r.json()["current_version"] == nxt
                        ledger.secrets[name] = nxt
                else:
                    pname = f"p{len(ledger.policies):03d}"
                    names = sorted(ledger.secrets)[:3]
                    doc = "allow_simulation = true\n[release]\nsecrets = " + json.dumps(names)
                    r = http.put(f"/v1/admin/policies/{pname}", json={"document": doc})
                    if r.status_code == 200:
                        ledger.policies[pname] = names
                ledger.writes += 1
            except httpx.HTTPError:
                return  # the server died mid-request: that write is not acknowledged


def check(url: str, token: str, ledger: Ledger, *, values: bool) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as http:
        listing = {s["name"]: s["current_version"] for s in http.get("/v1/admin/secrets").json()}
        for name, version in ledger.secrets.items():
            assert name in listing, f"acknowledged secret {name} is missing"
            # at most one more version: a rotate that committed but whose reply was lost
            assert version <= listing[name] <= version + 1, (name, version, listing[name])
            ledger.secrets[name] = listing[name]
        policies = {p["name"]: p["secrets"] for p in http.get("/v1/admin/policies").json()}
        for pname, names in ledger.policies.items():
            assert policies.get(pname) == names, f"acknowledged policy {pname} differs"
        if values:
            import base64

            for name, version in ledger.secrets.items():
                r = http.get(f"/v1/admin/secrets/{name}/value")
                assert base64.b64decode(r.json()["value"]) == value_of(name, version)


@pytest.fixture
def forkserver(_isolated_home: Path) -> Iterator[ForkServer]:
    env = {**os.environ, "SEALPOD_HOME": str(_isolated_home)}
    fs = ForkServer(env)
    try:
        yield fs
    finally:
        fs.close()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sigkill_during_admin_writes_keeps_every_acknowledged_write(
    forkserver: ForkServer, _isolated_home: Path, tmp_path: Path
) -> None:
    init = subprocess.run(
        [str(SEALPOD), "kms", "init", "--json"], capture_output=True, text=True, check=True
    )
    assert json.loads(init.stdout)["ok"] is True
    token = (_isolated_home / "kms" / "admin.token").read_text().strip()
    rng = random.Random(20251126)
    ledger = Ledger()
    started = time.monotonic()
    serve_args = ["kms", "serve", "--port", "0", "--insecure-http", "--no-access-log"]
    kills = 0
    for trial in range(TRIALS):
        info = tmp_path / f"info-{trial}.json"
        pid = forkserver.serve(tmp_path / "server.log", *serve_args, "--info-file", str(info))
        url = wait_ready(info, pid)
        check(url, token, ledger, values=False)
        stop = threading.Event()
        thread = threading.Thread(target=writer, args=(url, token, ledger, rng, stop))
        thread.start()
        time.sleep(rng.uniform(0.01, 0.2))
        os.kill(pid, signal.SIGKILL)
        kills += 1
        thread.join(timeout=10)
        stop.set()
        assert time.monotonic() - started < BUDGET_SECS, f"only {trial + 1} trials in budget"
    assert kills >= 50 and ledger.writes > kills
    print(
        f"{kills} kills, {ledger.writes} acknowledged writes in {time.monotonic() - started:.1f}s"
    )
    info = tmp_path / "info-final.json"
    pid = forkserver.serve(tmp_path / "server.log", *serve_args, "--info-file", str(info))
    url = wait_ready(info, pid)
    try:
        check(url, token, ledger, values=True)
        audit = subprocess.run(
            [str(SEALPOD), "kms", "audit", "--verify", "--json", "--url", url],
            capture_output=True,
            text=True,
        )
        assert audit.returncode == 0, audit.stdout + audit.stderr
        report = json.loads(audit.stdout)
        assert report["ok"] is True and report["server"]["macs_checked"] is True
        assert report["local"]["records"] >= len(ledger.secrets) + 2
    finally:
        os.kill(pid, signal.SIGTERM)
    db = sqlite3.connect(_isolated_home / "kms" / "kms.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()
