"""``sealpod kms rekey`` from the shell: in place, to a new file, to and from Shamir shares; a
rekey interrupted between the commit and the key file's rename is finished by the next run;
and the refusals, each with exit code 2 and nothing changed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from cli_process import fail_at_commit
from typer.testing import CliRunner

from sealpod.cli.main import app
from sealpod.kms.keys import MasterKey, load_master_key_file, write_master_key_file
from sealpod.kms.rekey import rekey
from sealpod.kms.state import SealState
from sealpod.kms.store import Store

VALUE = b"rekey-cli secret 5d1e"


def cli(*args: str, code: int = 0, stdin: str | None = None) -> dict[str, object]:
    result = CliRunner().invoke(app, ["kms", *args, "--json"], input=stdin)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return json.loads(result.stdout) if code == 0 else {"output": result.output}


@pytest.fixture
def home(_isolated_home: Path) -> Path:
    return _isolated_home / "kms"


def db_url(home: Path) -> str:
    return f"sqlite:///{home / 'kms.db'}"


def put_secret(home: Path, key: MasterKey) -> None:
    """A secret written as the server writes it, so the rekey has data keys to move."""
    store = Store.open(db_url(home))
    try:
        with store.transaction() as tx:
            row = tx.create_secret(name="db", kind="value", params={}, now_ms=1)
            tx.add_version(row, lambda v: key.encrypt_version("db", v, VALUE), 1)
    finally:
        store.close()


def value_under(home: Path, key: MasterKey) -> bytes:
    """The secret as a server unsealed with ``key`` opens it (after checking the key)."""
    store = Store.open(db_url(home))
    try:
        SealState(store).check_key(key)
        with store.read() as tx:
            row = tx.current_value("db")
        from sealpod.kms.keys import SealedValue

        sealed = SealedValue(bytes(row.wrapped_key), bytes(row.ciphertext))
        return key.decrypt_version("db", int(row.version), sealed)
    finally:
        store.close()


def test_rekey_in_place_replaces_the_key_file(home: Path) -> None:
    cli("init")
    key_file = home / "master.key"
    old = load_master_key_file(key_file)
    put_secret(home, old)
    out = cli("rekey")
    new = load_master_key_file(key_file)
    assert out["old_key_id"] == old.key_id and out["new_key_id"] == new.key_id != old.key_id
    assert out["versions_rewrapped"] == 1 and out["master_key"] == str(key_file)
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert not (home / "master.key.new").exists()
    assert value_under(home, new) == VALUE
    with pytest.raises(Exception, match="not this KMS's master key"):
        value_under(home, old)


def test_rekey_to_shares_and_back_to_a_file(home: Path, tmp_path: Path) -> None:
    cli("init")
    put_secret(home, load_master_key_file(home / "master.key"))
    out = cli("rekey", "--shares", "5", "--threshold", "3", "--shares-dir", str(tmp_path / "s"))
    assert out["mode"] == "shamir" and len(out["share_files"]) == 5  # type: ignore[arg-type]
    assert out["share_count"] == 5 and "shares" not in out  # written to files, not printed
    shares = [tmp_path / "s" / f"share-{i}.txt" for i in (2, 4, 5)]
    new_file = tmp_path / "new.key"
    out = cli(
        "rekey", *(a for s in shares for a in ("--share-file", str(s))),
        "--new-master-key-file", str(new_file),
    )  # fmt: skip
    assert out["mode"] == "key" and out["master_key"] == str(new_file)
    assert value_under(home, load_master_key_file(new_file)) == VALUE
    # ... and the shares are refused from now on.
    out = cli(
        "rekey", *(a for s in shares for a in ("--share-file", str(s))),
        "--new-master-key-file", str(tmp_path / "other.key"), code=2,
    )  # fmt: skip
    assert "not under Shamir shares" in str(out["output"])


def test_rekey_from_the_environment_needs_a_destination(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli("init")
    key_file = home / "master.key"
    monkeypatch.setenv("SEALPOD_KMS_MASTER_KEY", key_file.read_text().strip())
    out = cli("rekey", code=2)
    assert "--new-master-key-file" in str(out["output"])
    out = cli("rekey", "--new-master-key-file", str(tmp_path / "n.key"))
    assert out["master_key"] == str(tmp_path / "n.key")
    assert key_file.read_text()  # the file the env var came from is not touched


def test_an_interrupted_in_place_rekey_is_finished(home: Path) -> None:
    cli("init")
    key_file = home / "master.key"
    old = load_master_key_file(key_file)
    put_secret(home, old)
    # The crash: the new key staged, the database committed, the rename never happened.
    new = MasterKey.generate()
    write_master_key_file(home / "master.key.new", new)
    store = Store.open(db_url(home))
    try:
        rekey(store, old, new)
    finally:
        store.close()
    out = cli("rekey", "--master-key-file", str(key_file))
    assert out["completed"] == "interrupted rekey" and out["new_key_id"] == new.key_id
    assert load_master_key_file(key_file).key_id == new.key_id
    assert value_under(home, new) == VALUE


def test_a_staged_key_the_database_never_took_is_discarded(home: Path) -> None:
    cli("init")
    key_file = home / "master.key"
    old = load_master_key_file(key_file)
    stale = MasterKey.generate()
    write_master_key_file(home / "master.key.new", stale)  # crash before the commit
    out = cli("rekey")
    new = load_master_key_file(key_file)
    assert new.key_id not in (old.key_id, stale.key_id) and out["new_key_id"] == new.key_id


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--shares", "3"), "both --shares and --threshold"),
        (("--shares-dir", "x"), "--shares-dir needs"),
        (("--master-key-file", "missing.key", "--shares-dir", "x"), "cannot read"),
        (("--shares", "3", "--threshold", "2", "--new-master-key-file", "n"), "either"),
        (("--shares", "2", "--threshold", "3"), "threshold"),
        (("--master-key-file", "missing.key"), "cannot read master key file"),
        (("--share-file", "s.txt"), "not under Shamir shares"),
    ],
)
def test_refusals_change_nothing(
    home: Path, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    cli("init")
    (tmp_path / "s.txt").write_text("not a share\n")
    before = (home / "master.key").read_bytes()
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        out = cli("rekey", *args, code=2)
    finally:
        os.chdir(cwd)
    assert message in str(out["output"])
    assert (home / "master.key").read_bytes() == before
    assert list(tmp_path.glob("*.key")) == [] and not (home / "master.key.new").exists()
    assert not (tmp_path / "x").exists()


def test_rekey_refuses_an_uninitialised_database(home: Path) -> None:
    out = cli("rekey", code=2)
    assert "not initialised" in str(out["output"])


def test_a_wrong_new_key_file_location_initialises_nothing(home: Path, tmp_path: Path) -> None:
    cli("init")
    old = load_master_key_file(home / "master.key")
    (tmp_path / "taken.key").write_text("x")
    out = cli("rekey", "--new-master-key-file", str(tmp_path / "taken.key"), code=2)
    assert "already exists" in str(out["output"])
    store = Store.open(db_url(home))
    try:
        SealState(store).check_key(old)  # still the old key
    finally:
        store.close()


def test_printed_shares_work_from_stdin(home: Path, tmp_path: Path) -> None:
    cli("init")
    put_secret(home, load_master_key_file(home / "master.key"))
    result = CliRunner().invoke(app, ["kms", "rekey", "--shares", "3", "--threshold", "2"])
    assert result.exit_code == 0, result.output
    printed = [w for w in result.stdout.split() if w.startswith("sealpod-share-")]
    assert len(printed) == 3
    # Printed before the commit (a terminal that cannot show them rolls the rekey back) ...
    assert result.stdout.index(printed[0]) < result.stdout.index("master key replaced")
    # ... and the key file of before opens nothing now, and is said so.
    assert f"the old key file {home / 'master.key'} no longer opens anything" in result.stdout
    target = tmp_path / "back.key"
    cli("rekey", "--new-master-key-file", str(target), stdin=f"{printed[0]}\n{printed[2]}\n")
    assert value_under(home, load_master_key_file(target)) == VALUE
    out = cli("rekey", "--master-key-file", str(home / "master.key"), code=2)
    assert "not this KMS" in str(out["output"])
    out = cli("rekey", "--shares", "3", "--threshold", "2", "--master-key-file", str(target),
              code=2)  # fmt: skip
    assert "give --shares-dir with --json" in str(out["output"])


def test_a_kms_under_shares_gets_as_many_new_shares(home: Path, tmp_path: Path) -> None:
    out = cli("init", "--shares", "4", "--threshold", "3", "--shares-dir", str(tmp_path / "a"))
    first = sorted((tmp_path / "a").glob("share-*.txt"))
    out = cli(
        "rekey", *(a for s in first[1:] for a in ("--share-file", str(s))),
        "--shares-dir", str(tmp_path / "b"),
    )  # fmt: skip
    assert out["mode"] == "shamir" and out["share_count"] == 4 and out["threshold"] == 3
    second = sorted((tmp_path / "b").glob("share-*.txt"))
    assert len(second) == 4
    out = cli(
        "rekey", *(a for s in first[:3] for a in ("--share-file", str(s))),
        "--shares-dir", str(tmp_path / "c"), code=2,
    )  # fmt: skip  # the old shares open nothing
    assert "is not this KMS's key" in str(out["output"])
    assert list((tmp_path / "c").glob("*")) == []  # the empty share files made for it are gone


def _failing_commit(monkeypatch: pytest.MonkeyPatch, *, after_commit: bool) -> None:
    import sealpod.kms.rekey as rekey_module

    fail_at_commit(monkeypatch, rekey_module, "rekey", after_commit=after_commit)


@pytest.mark.parametrize("after_commit", [False, True])
def test_printed_shares_are_called_void_or_valid_when_the_commit_fails(
    home: Path, monkeypatch: pytest.MonkeyPatch, after_commit: bool
) -> None:
    cli("init")
    old = load_master_key_file(home / "master.key")
    _failing_commit(monkeypatch, after_commit=after_commit)
    result = CliRunner().invoke(app, ["kms", "rekey", "--shares", "3", "--threshold", "2"])
    assert result.exit_code == 16, result.output
    printed = [w for w in result.stdout.split() if w.startswith("sealpod-share-")]
    assert len(printed) == 3
    if after_commit:
        assert "the change WAS committed: keep the shares printed above" in result.stderr
        from sealpod.kms.shamir import Share, combine

        key = MasterKey(combine([Share.from_text(t) for t in printed[:2]]))
        store = Store.open(db_url(home))
        try:
            SealState(store).check_key(key)  # they are the key now, as stderr said
        finally:
            store.close()
    else:
        assert "the shares printed above are VOID" in result.stderr
        store = Store.open(db_url(home))
        try:
            SealState(store).check_key(old)
        finally:
            store.close()


def test_a_lost_commit_answer_keeps_the_new_key_file(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli("init")
    _failing_commit(monkeypatch, after_commit=True)
    target = tmp_path / "new.key"
    cli("rekey", "--new-master-key-file", str(target), code=16)
    store = Store.open(db_url(home))
    try:
        SealState(store).check_key(load_master_key_file(target))  # kept: the DB is under it
    finally:
        store.close()


def test_an_existing_share_file_is_neither_used_nor_removed(home: Path, tmp_path: Path) -> None:
    cli("init")
    (tmp_path / "s").mkdir()
    theirs = tmp_path / "s" / "share-2.txt"
    theirs.write_text("someone else's share\n")
    out = cli("rekey", "--shares", "3", "--threshold", "2", "--shares-dir", str(tmp_path / "s"),
              code=2)  # fmt: skip
    assert "already exists" in str(out["output"])
    assert theirs.read_text() == "someone else's share\n"
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["share-2.txt"]


def test_a_read_only_key_directory_locks_under_the_home(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os as os_module

    cli("init")
    key_file = home / "master.key"
    real_open = os_module.open

    def read_only_beside_the_key(path: Any, flags: int, mode: int = 0o777) -> int:
        if str(path) == f"{key_file}.lock":
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, flags, mode)

    monkeypatch.setattr(os_module, "open", read_only_beside_the_key)
    out = cli("rekey", "--new-master-key-file", str(tmp_path / "new.key"))
    assert out["master_key"] == str(tmp_path / "new.key")
    assert list(home.glob("rekey-*.lock"))  # the fallback lock, named after the key file
