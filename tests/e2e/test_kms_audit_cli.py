"""`sealpod kms audit` against a real server (issue 17 item 3): a checkpoint saved and checked
offline, a kept head that passes while the log grows, and a rollback of the database to an old
copy of itself — consistent, so `--verify` alone passes — caught by `--expect-head`."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from test_kms_e2e import Logs, cli, sp, start_server, stop_server


@pytest.mark.slow
def test_checkpoint_expect_head_and_rollback(_isolated_home: Path, tmp_path: Path) -> None:
    logs = Logs()
    sp("kms", "init")
    db = _isolated_home / "kms" / "kms.db"
    log = tmp_path / "serve.log"
    logs.files.append(log)
    server = start_server(_isolated_home, log, "--no-pcs")
    try:
        cli("kms", "user", "add", "aud", "--role", "auditor", "--out-token", str(tmp_path / "a"))
        auditor = ["--token-file", str(tmp_path / "a")]
        saved = tmp_path / "checkpoint.json"
        shown = cli("kms", "audit", "--checkpoint", "-o", str(saved), *auditor)
        assert "audit chain intact" in shown and "checkpoint " in shown
        doc = json.loads(saved.read_text())
        kept = doc["head"]
        (tmp_path / "jwks.json").write_text(json.dumps(doc["jwks"]))  # the keys, kept apart
        offline = cli(
            "kms", "audit", "--verify-checkpoint", str(saved), "--jwks", str(tmp_path / "jwks.json")
        )
        assert f"checkpoint valid: head {kept}" in offline
        # Without a pinned key set, a checkpoint proves nothing: refused as bad usage.
        assert "--jwks" in cli("kms", "audit", "--verify-checkpoint", str(saved), code=2)
        assert "SEQ:HASH" in cli("kms", "audit", "--verify", "--expect-head", "12:ab", code=2)

        with sqlite3.connect(db) as conn:  # a "backup" of the database as it is now
            backup_head = conn.execute("SELECT seq, hash, mac FROM kms_audit_head").fetchone()
        value = tmp_path / "v.txt"
        value.write_text("v")
        cli("kms", "secret", "put", "later", "--from-file", str(value))
        later = json.loads(cli("kms", "audit", "--verify", "--json", "--expect-head", kept))
        assert later["ok"] is True  # the log grew past the kept head: still a prefix
        kept = later["head"]
    finally:
        stop_server(server)

    # The attacker restores the old copy: records after the backup gone, head row as it was.
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM kms_audit WHERE seq > ?", (backup_head[0],))
        conn.execute("UPDATE kms_audit_head SET seq = ?, hash = ?, mac = ?", backup_head)
    server = start_server(_isolated_home, tmp_path / "serve2.log", "--no-pcs")
    try:
        assert "intact" in cli("kms", "audit", "--verify")  # consistent in itself
        broken = sp("kms", "audit", "--verify", "--expect-head", kept, "--json", ok=False)
        assert broken.returncode == 16, broken.stderr
        codes = {p["code"] for p in json.loads(broken.stdout)["local"]["problems"]}
        assert codes == {"expected_head"}
    finally:
        stop_server(server)
