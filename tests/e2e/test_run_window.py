"""The rollback window end to end: "the last commit before an unmount is always
recorded" (docs/runtime.md). When the KMS cannot be reached at the unmount (a host controls the
network), the synced writes of the window stay unrecorded; `sealpod run` must not end as if the
volume had been closed cleanly."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from pod_harness import (
    Kms,
    build_pod,
    busybox_rootfs,
    events,
    kms_fixture,  # noqa: F401 (the kms fixture)
    need_volumes,
    run_args,
)

WRITER = """#!/bin/sh
echo "synced inside the window" > /data/f
sync /data/f
echo SYNCED
sleep 6
echo DONE
"""

SPEC = """
[process]
entrypoint = "/app/writer.sh"
user = "app"
[[volumes]]
path = "/data"
name = "appdata"
rollback_window_ms = 60000
[identity]
product_id = 1
svn = 1
"""


def test_a_window_the_kms_cannot_record_at_unmount_is_reported(tmp_path: Path, kms: Kms) -> None:
    need_volumes()
    rootfs = busybox_rootfs(tmp_path / "rootfs", {"/app/writer.sh": WRITER})
    (rootfs / "bin" / "sync").symlink_to("busybox")
    pod = build_pod(tmp_path, SPEC, rootfs)
    kms.put_secret("volume.appdata", generate="bytes:32")
    kms.allow(pod, ["volume.appdata"])
    vdir = tmp_path / "volumes"
    proc = subprocess.Popen(
        run_args(pod, kms, "--json", "--volume-dir", str(vdir)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.strip() == "SYNCED", first + (proc.stderr.read() if proc.stderr else "")
        kms.stop()  # the KMS is gone before the window (30 s to the first catch-up) is recorded
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "DONE" in out
    warned = [
        e for e in events(err)
        if e.get("event") == "warning" and "appdata" in str(e.get("message", ""))
    ]  # fmt: skip
    assert proc.returncode != 0 or warned, (
        f"exit {proc.returncode} and no warning: the window was left unrecorded silently\n{err}"
    )
