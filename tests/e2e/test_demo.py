"""`make demo` is the main job a newcomer runs first; this runs the same script end to end so a
change that breaks it fails CI. The script itself fails if any refusal step is accepted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_script_runs_to_the_end(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALPOD_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DEMO_OUT"] = str(tmp_path / "demo-out")
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "demo.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,  # the first run builds a Debian rootfs with Python (cached after)
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Traceback" not in out
    # tampered bundle, sim evidence, KMS, volume fsck, and (as root) a restored old volume copy
    assert out.count("as it should be") == (5 if os.geteuid() == 0 else 4)
    assert "VERIFIED and accepted by the policy" in out
    assert "== Done." in out
    # Nothing the KMS released may be printed by the demo (secrets go to files, mode 0600).
    released = (tmp_path / "demo-out" / "secrets" / "db-password").read_text()
    assert released and released not in out
    assert (tmp_path / "demo-out" / "secrets" / "db-password").stat().st_mode & 0o077 == 0
    if os.geteuid() == 0:  # the service part: a sealed pod served, restarted, rollback refused
        assert out.count("the first note") >= 2 and "the second note" in out
        assert "sealpod: ready ok" in out
        assert "through it (same pod, same phases)" in out  # the warm start through the agent
        assert "agent pid" in out and "1 pod(s)" in out
        password = (tmp_path / "demo-out" / "notes-password").read_text()
        assert password and password not in out
