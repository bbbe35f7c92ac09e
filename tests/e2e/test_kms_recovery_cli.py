"""``sealpod kms recovery-keys`` and ``sealpod kms recover`` from the shell: the lost key file
comes back from recovery shares, also after a rekey; refusals exit 2 and write no key file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_process import fail_at_commit
from typer.testing import CliRunner

from sealpod.cli.main import app
from sealpod.kms.keys import load_master_key_file


def cli(*args: str, code: int = 0, stdin: str | None = None) -> dict[str, object]:
    result = CliRunner().invoke(app, ["kms", *args, "--json"], input=stdin)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return json.loads(result.stdout) if code == 0 else {"output": result.output}


def plain(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, ["kms", *args])
    assert result.exit_code == code, result.output
    return result.stdout


def shares_in(directory: Path) -> list[str]:
    return [p.read_text().strip() for p in sorted(directory.glob("*.txt"))]


@pytest.fixture
def home(_isolated_home: Path) -> Path:
    return _isolated_home / "kms"


def test_a_lost_key_file_comes_back(home: Path, tmp_path: Path) -> None:
    cli("init")
    key_file = home / "master.key"
    original = load_master_key_file(key_file)
    out = cli("recovery-keys", "--shares", "3", "--threshold", "2", "--shares-dir", str(tmp_path))
    assert out["replaced"] is False and len(out["share_files"]) == 3  # type: ignore[arg-type]
    assert "sealpod-share" not in json.dumps(out)  # written to files, not printed
    key_file.unlink()  # the disaster
    out = cli(
        "recover", "--share-file", str(tmp_path / "recovery-1.txt"),
        "--share-file", str(tmp_path / "recovery-3.txt"),
    )  # fmt: skip
    assert out["master_key"] == str(key_file) and out["key_id"] == original.key_id
    assert load_master_key_file(key_file).raw == original.raw
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"


def test_recovery_after_a_rekey_gives_the_new_key(home: Path, tmp_path: Path) -> None:
    cli("init")
    cli("recovery-keys", "--shares", "2", "--threshold", "2", "--shares-dir", str(tmp_path / "r"))
    printed = [p.read_text().strip() for p in sorted((tmp_path / "r").glob("recovery-*.txt"))]
    assert len(printed) == 2
    rekeyed = cli("rekey", "--keep-recovery-keys")
    assert rekeyed["recovery_keys"] == "kept"
    target = tmp_path / "recovered.key"
    out = cli("recover", "--master-key-file", str(target), stdin="\n".join(printed) + "\n")
    assert out["key_id"] == rekeyed["new_key_id"]
    assert load_master_key_file(target).raw == load_master_key_file(home / "master.key").raw


def test_a_kms_under_unseal_shares_gets_recovery_shares(tmp_path: Path) -> None:
    cli("init", "--shares", "3", "--threshold", "2", "--shares-dir", str(tmp_path / "unseal"))
    unseal = sorted((tmp_path / "unseal").glob("share-*.txt"))
    printed = plain(
        "recovery-keys", "--shares", "2", "--threshold", "2",
        "--share-file", str(unseal[0]), "--share-file", str(unseal[2]),
    )  # fmt: skip
    lines = [w for w in printed.split() if w.startswith("sealpod-share-")]
    assert len(lines) == 2  # printed before the commit, once
    target = tmp_path / "k"
    got = cli("recover", "--master-key-file", str(target), stdin="\n".join(lines) + "\n")
    assert load_master_key_file(target).key_id == got["key_id"]


def test_refusals_write_no_key(home: Path, tmp_path: Path) -> None:
    cli("init")
    out = cli("recover", "--master-key-file", str(tmp_path / "a.key"), stdin="x\n", code=2)
    assert "no recovery key" in str(out["output"])
    cli("recovery-keys", "--shares", "3", "--threshold", "3", "--shares-dir", str(home / "r1"))
    shares = shares_in(home / "r1")
    out = cli("recover", code=2, stdin="\n".join(shares) + "\n")  # master.key is still there
    assert "already exists" in str(out["output"])
    out = cli("recover", "--master-key-file", str(tmp_path / "b.key"),
              stdin="\n".join(shares[:2]) + "\n", code=2)  # fmt: skip
    assert "2 share(s) given, 3 needed" in str(out["output"])
    cli("recovery-keys", "--shares", "3", "--threshold", "3", "--shares-dir", str(home / "r2"))
    out = cli("recover", "--master-key-file", str(tmp_path / "c.key"),
              stdin="\n".join(shares) + "\n", code=2)  # fmt: skip
    assert "do not open this KMS's escrow" in str(out["output"])
    out = cli("recovery-keys", "--shares", "2", "--threshold", "3", "--shares-dir",
              str(home / "r3"), code=2)  # fmt: skip
    assert "threshold" in str(out["output"])
    assert shares_in(home / "r3") == []  # the empty files made before the commit are gone
    out = cli("recovery-keys", "--shares", "2", "--threshold", "2", code=2)
    assert "give --shares-dir with --json" in str(out["output"])
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_recovery_keys_need_the_current_key(home: Path, tmp_path: Path) -> None:
    cli("init")
    (home / "master.key").rename(tmp_path / "elsewhere.key")
    out = cli("recovery-keys", "--shares", "2", "--threshold", "2", code=2)
    assert "cannot read master key file" in str(out["output"])
    elsewhere = str(tmp_path / "elsewhere.key")
    out = cli("recovery-keys", "--shares", "2", "--threshold", "2", "--shares-dir",
              str(tmp_path / "r"), "--master-key-file", elsewhere)  # fmt: skip
    assert out["shares"] == 2


def _failing_commit(monkeypatch: pytest.MonkeyPatch, *, after_commit: bool) -> None:
    import sealpod.kms.recovery as recovery_module

    fail_at_commit(
        monkeypatch, recovery_module, "create_recovery_shares", after_commit=after_commit
    )


@pytest.mark.parametrize("after_commit", [False, True])
def test_share_files_are_kept_exactly_when_the_commit_happened(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, after_commit: bool
) -> None:
    cli("init")
    _failing_commit(monkeypatch, after_commit=after_commit)
    cli("recovery-keys", "--shares", "2", "--threshold", "2", "--shares-dir",
        str(tmp_path / "r"), code=16)  # fmt: skip
    kept = shares_in(tmp_path / "r")
    if after_commit:  # the only working recovery shares now: they must survive
        assert len(kept) == 2
        (home / "master.key").unlink()
        monkeypatch.undo()
        out = cli("recover", stdin="\n".join(kept) + "\n")
        assert out["master_key"] == str(home / "master.key")
    else:
        assert kept == []


@pytest.mark.parametrize("after_commit", [False, True])
def test_printed_recovery_shares_are_called_void_or_valid(
    home: Path, monkeypatch: pytest.MonkeyPatch, after_commit: bool
) -> None:
    cli("init")
    _failing_commit(monkeypatch, after_commit=after_commit)
    result = CliRunner().invoke(app, ["kms", "recovery-keys", "--shares", "2", "--threshold", "2"])
    assert result.exit_code == 16, result.output
    expected = (
        "WAS committed: keep the recovery shares" if after_commit else "printed above are VOID"
    )
    assert expected in result.stderr
