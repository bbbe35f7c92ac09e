"""SIGKILL of ``sealpod kms rekey`` at random instants: afterwards the database is under exactly
one of the key files left on disk, the next ``rekey`` completes, and then every secret opens
and the audit log verifies with its MACs (bounded: 12 kills, about 20 s)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest

from sealpod.errors import ConfigError
from sealpod.kms.audit import AuditEntry
from sealpod.kms.keys import MasterKey, SealedValue, load_master_key_file, write_master_key_file
from sealpod.kms.state import SealState, initialize
from sealpod.kms.store import Store

SEALPOD = Path(sys.executable).with_name("sealpod")
TRIALS = 12
SECRETS = 1500
AUDIT = 30_000


def value_of(i: int) -> bytes:
    return f"durable secret {i:05d}".encode()


def seal_value(key: MasterKey, i: int, version: int) -> SealedValue:
    return key.encrypt_version(f"s{i}", version, value_of(i))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A KMS home with many secret versions and audit records (so a rekey takes a while)."""
    home = tmp_path_factory.mktemp("rekey-template")
    (home / "kms").mkdir(mode=0o700)
    key = MasterKey.generate()
    write_master_key_file(home / "kms" / "master.key", key)
    store = Store.open(f"sqlite:///{home / 'kms' / 'kms.db'}")
    try:
        initialize(store, key)
        with store.transaction() as tx:
            for i in range(SECRETS):
                row = tx.create_secret(name=f"s{i}", kind="value", params={}, now_ms=1)
                tx.add_version(row, partial(seal_value, key, i), 1)
            for start in range(0, AUDIT, 1000):
                entries = [
                    AuditEntry(ts_ms=start + j, kind="secret.release", actor="w", subject="s",
                               outcome="ok", details={"n": start + j})
                    for j in range(1000)
                ]  # fmt: skip
                tx.append_audit_many(entries, mac=key.audit_mac)
    finally:
        store.close()
    return home


def run_rekey(home: Path, *, capture: bool = True) -> subprocess.Popen[bytes]:
    sink = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen(
        [str(SEALPOD), "kms", "rekey", "--json"],
        env={**os.environ, "SEALPOD_HOME": str(home)},
        stdout=sink,
        stderr=sink,
    )


def keys_matching(home: Path, store: Store) -> list[str]:
    found = []
    for name in ("master.key", "master.key.new"):
        path = home / "kms" / name
        if path.exists():
            try:
                SealState(store).check_key(load_master_key_file(path))
                found.append(name)
            except ConfigError:  # a non-matching or empty file: not this one
                continue
    return found


def check_all_readable(home: Path) -> None:
    key = load_master_key_file(home / "kms" / "master.key")
    store = Store.open(f"sqlite:///{home / 'kms' / 'kms.db'}")
    try:
        SealState(store).check_key(key)
        with store.read() as tx:
            rows = tx.current_values([f"s{i}" for i in range(SECRETS)])
        for i in range(SECRETS):
            row = rows[f"s{i}"]
            sealed = SealedValue(bytes(row.wrapped_key), bytes(row.ciphertext))
            assert key.decrypt_version(f"s{i}", int(row.version), sealed) == value_of(i)
        with store.read() as tx:
            report = tx.verify_audit(key.audit_mac)
        assert report.ok, report.problems[:3]
    finally:
        store.close()


def test_sigkill_during_rekey_loses_nothing(template: Path, tmp_path: Path) -> None:
    # One undisturbed run sets the time window the kills fall in.
    probe = tmp_path / "probe"
    shutil.copytree(template, probe)
    t0 = time.monotonic()
    proc = run_rekey(probe)
    _, stderr = proc.communicate(timeout=120)
    duration = time.monotonic() - t0
    assert proc.returncode == 0, stderr.decode()
    check_all_readable(probe)

    rng = random.Random(20261126)
    outcomes: dict[str, int] = {}
    for trial in range(TRIALS):
        home = tmp_path / f"t{trial}"
        shutil.copytree(template, home)
        old = load_master_key_file(home / "kms" / "master.key")
        proc = run_rekey(home, capture=False)
        time.sleep(rng.uniform(0.5, 1.05) * duration)  # the commit comes late in a run
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        store = Store.open(f"sqlite:///{home / 'kms' / 'kms.db'}")
        try:
            matching = keys_matching(home, store)
        finally:
            store.close()
        assert len(matching) == 1, f"trial {trial}: the database is under {matching}"
        if proc.returncode != -signal.SIGKILL:
            state = "finished"
        elif matching == ["master.key.new"]:
            state = "between commit and rename"
        elif load_master_key_file(home / "kms" / "master.key") == old:
            state = "before commit"
        else:
            state = "after rename"
        outcomes[state] = outcomes.get(state, 0) + 1
        again = run_rekey(home)
        _, stderr = again.communicate(timeout=120)
        assert again.returncode == 0, f"trial {trial}: {stderr.decode()}"
        assert not (home / "kms" / "master.key.new").exists()
        check_all_readable(home)
    # Print where the kills fell (visible with -s); the invariant above holds for every one.
    print(f"rekey kills: {outcomes} (one full run {duration:.2f} s)")


def test_two_rekeys_at_once_both_finish(template: Path, tmp_path: Path) -> None:
    """Two operators (two SEALPOD_HOMEs) rekey one database and key file at once: the second
    waits on the lock beside the key file, then reads the key the first left, so no staged key
    is taken for a stale one, and the key file opens the database."""
    home = tmp_path / "both"
    shutil.copytree(template, home)
    key_file, db = home / "kms" / "master.key", f"sqlite:///{home / 'kms' / 'kms.db'}"
    procs = []
    for operator in ("alice", "bob"):
        (tmp_path / operator).mkdir()
        procs.append(
            subprocess.Popen(
                [str(SEALPOD), "kms", "rekey", "--json", "--db", db,
                 "--master-key-file", str(key_file)],
                env={**os.environ, "SEALPOD_HOME": str(tmp_path / operator)},
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
        )  # fmt: skip
    for proc in procs:
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr.decode()
    assert not (home / "kms" / "master.key.new").exists()
    check_all_readable(home)


def test_sigkill_during_rekey_to_shares_never_loses_the_key(template: Path, tmp_path: Path) -> None:
    """The new shares are written and fsynced before the commit: after a kill the database is
    under the old key file, or under the key the share files combine to."""
    from sealpod.kms.keys import MasterKey
    from sealpod.kms.shamir import Share, combine

    def start(home: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [str(SEALPOD), "kms", "rekey", "--json", "--shares", "3", "--threshold", "2",
             "--shares-dir", str(home / "new-shares")],
            env={**os.environ, "SEALPOD_HOME": str(home)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    probe = tmp_path / "probe"
    shutil.copytree(template, probe)
    t0 = time.monotonic()
    assert start(probe).wait(timeout=120) == 0
    duration = time.monotonic() - t0
    rng = random.Random(7)
    outcomes: dict[str, int] = {}
    for trial in range(8):
        home = tmp_path / f"s{trial}"
        shutil.copytree(template, home)
        shares_dir = home / "new-shares"
        proc = start(home)
        time.sleep(rng.uniform(0.75, 1.05) * duration)  # around the commit, late in a run
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        store = Store.open(f"sqlite:///{home / 'kms' / 'kms.db'}")
        try:
            if keys_matching(home, store) == ["master.key"]:
                outcomes["old key"] = outcomes.get("old key", 0) + 1
                continue
            texts = [p.read_text().strip() for p in sorted(shares_dir.glob("share-*.txt"))]
            key = MasterKey(combine([Share.from_text(t) for t in texts[:2]]))
            SealState(store).check_key(key)  # the database is under the shares' key
            outcomes["new shares"] = outcomes.get("new shares", 0) + 1
        finally:
            store.close()
    print(f"rekey-to-shares kills: {outcomes}")
