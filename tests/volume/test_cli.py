"""``sealpod volume`` as a user runs it (in-process typer runner): create, info, fsck, rekey,
export, import; refusals exit with their family's code and never show a traceback."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sealpod.cli.main import app
from sealpod.volume import LocalFreshness, load_key_file, open_volume
from sealpod.volume import format as fmt

TRACEBACK = "Traceback (most recent call last)"


def run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    text = result.stdout + (result.stderr if result.stderr_bytes is not None else "")
    assert TRACEBACK not in text
    return result.exit_code, text


@pytest.fixture
def made(tmp_path: Path) -> tuple[Path, Path, Path]:
    vol, key, counters = tmp_path / "vol", tmp_path / "key", tmp_path / "counters"
    code, text = run("volume", "create", vol, "--key-file", key, "--new-key",
                     "--counter-dir", counters)  # fmt: skip
    assert code == 0, text
    assert key.stat().st_mode & 0o777 == 0o600
    return vol, key, counters


def _opts(key: Path, counters: Path) -> list[str | Path]:
    return ["--key-file", key, "--counter-dir", counters]


def _populate(vol: Path, key: Path, counters: Path) -> None:
    with open_volume(vol, load_key_file(key), counter=LocalFreshness(counters)) as v:
        v.mkdir("docs/deep", parents=True)
        v.write_file("docs/readme.md", b"# hello\n")
        v.write_file("docs/deep/data.bin", os.urandom(300_000))
        v.symlink(v.stat("docs").ino, b"link", b"readme.md", uid=0, gid=0)


def test_create_and_info_json(made: tuple[Path, Path, Path]) -> None:
    vol, key, counters = made
    _populate(vol, key, counters)
    code, text = run("volume", "info", vol, *_opts(key, counters), "--json")
    assert code == 0, text
    info = json.loads(text)
    assert info["files"] == 2 and info["directories"] == 2 and info["symlinks"] == 1
    assert info["counter"] == info["freshness_counter"]
    code, text = run("volume", "info", vol, *_opts(key, counters))
    assert code == 0 and info["volume_id"] in text


def test_fsck_clean_then_lists_every_corrupt_node(made: tuple[Path, Path, Path]) -> None:
    vol, key, counters = made
    _populate(vol, key, counters)
    code, text = run("volume", "fsck", vol, *_opts(key, counters), "--json")
    assert code == 0, text
    assert json.loads(text)["ok"] is True
    victim = max((vol / "files").iterdir(), key=lambda p: p.stat().st_size)
    raw = bytearray(victim.read_bytes())
    for i in (2, 40):
        raw[fmt.data_slot(i) * fmt.NODE_SIZE + 7] ^= 1
    victim.write_bytes(raw)
    code, text = run("volume", "fsck", vol, *_opts(key, counters), "--json")
    assert code == 15
    report = json.loads(text)
    assert [(p["path"], p["node"]) for p in report["problems"]] == [
        ("docs/deep/data.bin", "data 2"),
        ("docs/deep/data.bin", "data 40"),
    ]
    code, text = run("volume", "fsck", vol, *_opts(key, counters))
    assert code == 15 and "2 problems" in text


def test_fsck_reports_broken_mht_subtree(made: tuple[Path, Path, Path]) -> None:
    vol, key, counters = made
    _populate(vol, key, counters)
    victim = max((vol / "files").iterdir(), key=lambda p: p.stat().st_size)
    raw = bytearray(victim.read_bytes())
    raw[fmt.mht_slot(0) * fmt.NODE_SIZE] ^= 1
    victim.write_bytes(raw)
    code, text = run("volume", "fsck", vol, *_opts(key, counters), "--json")
    assert code == 15
    nodes = [p["node"] for p in json.loads(text)["problems"]]
    assert nodes == ["MHT 0", "data 0"]


def test_fsck_wrong_key_is_a_problem_not_a_traceback(made: tuple[Path, Path, Path]) -> None:
    vol, _, counters = made
    other = vol.parent / "other.key"
    other.write_text(os.urandom(32).hex())
    other.chmod(0o600)
    code, text = run("volume", "fsck", vol, *_opts(other, counters), "--json")
    assert code == 15
    assert "wrong key" in json.loads(text)["problems"][0]["message"]


def test_rekey_old_key_no_longer_opens(made: tuple[Path, Path, Path]) -> None:
    vol, key, counters = made
    _populate(vol, key, counters)
    new = vol.parent / "new.key"
    code, text = run("volume", "rekey", vol, *_opts(key, counters), "--new-key-file", new,
                     "--generate")  # fmt: skip
    assert code == 0, text
    code, text = run("volume", "info", vol, *_opts(key, counters), "--json")
    assert code == 15 and json.loads(text)["error"]["code"] == "volume.corrupt"
    code, text = run("volume", "info", vol, *_opts(new, counters), "--json")
    assert code == 0 and json.loads(text)["files"] == 2


@pytest.mark.parametrize("archive", ["plain", "out.tar", "out.tar.gz"])
def test_export_then_import_roundtrip(made: tuple[Path, Path, Path], archive: str) -> None:
    vol, key, counters = made
    _populate(vol, key, counters)
    dest = vol.parent / archive
    code, text = run("volume", "export", vol, dest, *_opts(key, counters), "--json")
    assert code == 0, text
    assert json.loads(text)["files"] == 2
    if archive == "plain":
        assert (dest / "docs" / "readme.md").read_bytes() == b"# hello\n"
        assert os.readlink(dest / "docs" / "link") == "readme.md"
    else:
        with tarfile.open(dest) as tar:
            assert "docs/deep/data.bin" in tar.getnames()
    vol2, counters2 = vol.parent / "vol2", vol.parent / "counters2"
    assert run("volume", "create", vol2, "--key-file", key, "--counter-dir", counters2)[0] == 0
    code, text = run("volume", "import", vol2, dest, *_opts(key, counters2), "--into", "copy",
                     "--json")  # fmt: skip
    assert code == 0, text
    with (
        open_volume(vol, load_key_file(key), counter=LocalFreshness(counters), readonly=True) as a,
        open_volume(vol2, load_key_file(key), counter=LocalFreshness(counters2)) as b,
    ):
        assert b.read_file("copy/docs/deep/data.bin") == a.read_file("docs/deep/data.bin")
        assert b.readlink(b.stat("copy/docs/link").ino) == b"readme.md"


def test_import_refuses_unsafe_archive_names(made: tuple[Path, Path, Path]) -> None:
    vol, key, counters = made
    evil = vol.parent / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../escape")
        info.size = 0
        tar.addfile(info)
    code, text = run("volume", "import", vol, evil, *_opts(key, counters))
    assert code == 2 and "unsafe name" in text


def test_export_refuses_non_empty_destination(made: tuple[Path, Path, Path]) -> None:
    vol, key, counters = made
    dest = vol.parent / "busy"
    dest.mkdir()
    (dest / "x").write_text("x")
    code, text = run("volume", "export", vol, dest, *_opts(key, counters))
    assert code == 2 and "not an empty directory" in text


def test_key_file_with_loose_permissions_is_refused(made: tuple[Path, Path, Path]) -> None:
    vol, key, counters = made
    key.chmod(0o644)
    code, text = run("volume", "info", vol, *_opts(key, counters), "--json")
    assert code == 2
    assert "mode 0644" in json.loads(text)["error"]["message"]


def test_not_a_volume_and_existing_volume(made: tuple[Path, Path, Path], tmp_path: Path) -> None:
    vol, key, counters = made
    code, text = run("volume", "info", tmp_path / "nothing", *_opts(key, counters), "--json")
    assert code == 15 and json.loads(text)["error"]["code"] == "volume.format"
    code, text = run("volume", "create", vol, *_opts(key, counters))
    assert code == 15 and "already holds" in text


def test_rollback_is_reported_with_its_code(made: tuple[Path, Path, Path], tmp_path: Path) -> None:
    import shutil

    vol, key, counters = made
    shutil.copytree(vol, tmp_path / "old")
    _populate(vol, key, counters)
    shutil.rmtree(vol)
    shutil.copytree(tmp_path / "old", vol)
    code, text = run("volume", "info", vol, *_opts(key, counters), "--json")
    assert code == 15 and json.loads(text)["error"]["code"] == "volume.rollback"


def test_unmount_of_something_else_is_refused(tmp_path: Path) -> None:
    code, text = run("volume", "unmount", tmp_path)
    assert code == 15 and "not a mounted sealpod volume" in text
