"""Export and import at scale and under failure (issues 17.6, 17.7, 16.9, 16.3).

* Work on a sparse file costs what is stored: fsck and export of a 1 TiB file with one byte
  written visit a handful of nodes (a guard fails the test if the 268 million holes are walked).
* An export that fails part-way leaves nothing behind: no partial plaintext directory or archive.
* Import commits in batches (memory stays bounded; bench/volume_import_bench.py measures it)
  and names its phases; importing onto an existing file is a ConfigError, or replaces it with
  ``overwrite``.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sealpod.cli.main import app
from sealpod.errors import ConfigError, VolumeCorrupt
from sealpod.volume import LocalFreshness, MemoryFreshness, create_volume, open_volume, transfer
from sealpod.volume import format as fmt
from sealpod.volume.fsck import fsck
from sealpod.volume.pfile import ProtectedFile

TIB = 1 << 40
NODE_BUDGET = 10_000  # node visits allowed per operation; walking the holes needs millions


@pytest.fixture
def node_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Fail fast if an operation visits more than NODE_BUDGET tree nodes."""
    visits = [0]

    def guarded(name: str) -> None:
        original = getattr(ProtectedFile, name)

        def wrapper(self: ProtectedFile, *args: object) -> object:
            visits[0] += 1
            if visits[0] > NODE_BUDGET:
                raise AssertionError(f"{name}: more than {NODE_BUDGET} node visits (holes walked)")
            return original(self, *args)

        monkeypatch.setattr(ProtectedFile, name, wrapper)

    for name in ("_mht", "_open_run"):
        guarded(name)
    yield visits


@pytest.fixture
def sparse_vol(tmp_path: Path, key: bytes, store: MemoryFreshness) -> Path:
    path = tmp_path / "vol"
    create_volume(path, key, counter=store)
    with open_volume(path, key, counter=store) as vol:
        with vol.open("huge.bin", "w+b") as f:
            f.pwrite(b"!", TIB)  # logical size 1 TiB + 1
        vol.write_file("small.txt", b"hello")
    return path


def test_fsck_of_a_1_tib_sparse_file_visits_only_stored_nodes(
    sparse_vol: Path, key: bytes, store: MemoryFreshness, node_guard: list[int]
) -> None:
    report = fsck(sparse_vol, key, counter=store)
    assert report.ok, report.problems
    assert report.files_checked == 2
    assert report.nodes_checked < 50
    assert node_guard[0] < 200


def test_fsck_still_finds_a_corrupt_node_of_a_sparse_file(
    sparse_vol: Path, key: bytes, store: MemoryFreshness
) -> None:
    with open_volume(sparse_vol, key, counter=store, readonly=True) as vol:
        fid = vol.index.inodes[vol.stat("huge.bin").ino].file_id.hex()
    host = sparse_vol / "files" / fid
    i = TIB // fmt.NODE_SIZE
    with open(host, "r+b") as f:
        f.seek(fmt.data_slot(i) * fmt.NODE_SIZE + 5)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 1]))
    report = fsck(sparse_vol, key, counter=store)
    assert [(p.path, p.node) for p in report.problems] == [("huge.bin", f"data {i}")]


def test_reading_a_hole_costs_what_is_read(
    sparse_vol: Path, key: bytes, store: MemoryFreshness, node_guard: list[int]
) -> None:
    with open_volume(sparse_vol, key, counter=store, readonly=True) as vol:
        with vol.open("huge.bin") as f:
            assert f.pread(TIB // 2, 1 << 20) == bytes(1 << 20)
            assert f.pread(TIB - 4, 10) == bytes(4) + b"!"


def test_export_of_a_1_tib_sparse_file_keeps_the_holes(
    sparse_vol: Path, key: bytes, store: MemoryFreshness, tmp_path: Path, node_guard: list[int]
) -> None:
    out = tmp_path / "out"
    with open_volume(sparse_vol, key, counter=store, readonly=True) as vol:
        stats = transfer.export_volume(vol, out)
    assert stats.files == 2
    huge = out / "huge.bin"
    assert huge.stat().st_size == TIB + 1
    assert huge.stat().st_blocks * 512 < 1 << 20  # a sparse host file, not 1 TiB of zeros
    with open(huge, "rb") as f:
        f.seek(TIB - 2)
        assert f.read() == b"\0\0!"
    assert (out / "small.txt").read_bytes() == b"hello"
    assert out.stat().st_mode & 0o777 == 0o700  # plaintext: private by default


def test_tar_export_of_a_sparse_file_is_refused_clearly_and_leaves_nothing(
    sparse_vol: Path, key: bytes, store: MemoryFreshness, tmp_path: Path, node_guard: list[int]
) -> None:
    with open_volume(sparse_vol, key, counter=store, readonly=True) as vol:
        with pytest.raises(ConfigError, match="sparse"):
            transfer.export_volume(vol, tmp_path / "out.tar")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vol"]


def _corrupt_export_source(path: Path, key: bytes, store: MemoryFreshness) -> None:
    with open_volume(path, key, counter=store) as vol:
        vol.write_file("a-first.txt", b"plaintext that must not be left behind")
        vol.write_file("z-last.bin", os.urandom(100_000))
        fid = vol.index.inodes[vol.stat("z-last.bin").ino].file_id.hex()
    host = path / "files" / fid
    raw = bytearray(host.read_bytes())
    raw[fmt.data_slot(3) * fmt.NODE_SIZE] ^= 1
    host.write_bytes(raw)


@pytest.mark.parametrize("name", ["out", "out.tar", "out.tar.gz"])
def test_an_export_that_fails_part_way_leaves_no_plaintext(
    tmp_path: Path, key: bytes, store: MemoryFreshness, name: str
) -> None:
    path = tmp_path / "vol"
    create_volume(path, key, counter=store)
    _corrupt_export_source(path, key, store)
    dest = tmp_path / "exports" / name
    dest.parent.mkdir()
    with open_volume(path, key, counter=store, readonly=True) as vol:
        with pytest.raises(VolumeCorrupt):
            transfer.export_volume(vol, dest)
    assert list(dest.parent.iterdir()) == []


def test_export_into_an_existing_empty_directory(
    tmp_path: Path, key: bytes, store: MemoryFreshness
) -> None:
    path = tmp_path / "vol"
    create_volume(path, key, counter=store)
    with open_volume(path, key, counter=store) as vol:
        vol.mkdir("d")
        vol.write_file("d/f.txt", b"x")
    (tmp_path / "out").mkdir()
    with open_volume(path, key, counter=store, readonly=True) as vol:
        transfer.export_volume(vol, tmp_path / "out")
    assert (tmp_path / "out" / "d" / "f.txt").read_bytes() == b"x"


def _tree(root: Path, files: int) -> Path:
    for n in range(files):
        d = root / f"d{n % 3}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{n}").write_bytes(os.urandom(n * 100))
    (root / "link").symlink_to("d0/f0")
    return root


def test_import_commits_in_batches_and_names_its_phases(
    tmp_path: Path, key: bytes, store: MemoryFreshness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transfer, "BATCH_FILES", 10)
    src = _tree(tmp_path / "src", 35)
    path = tmp_path / "vol"
    create_volume(path, key, counter=store)
    phases: list[str] = []
    with open_volume(path, key, counter=store) as vol:
        before = vol.counter
        stats = transfer.import_tree(vol, src, into="app", phase=phases.append)
        commits = vol.counter - before
    assert stats.files == 35 and stats.symlinks == 1 and stats.directories == 3
    assert commits >= 4  # 36 entries in batches of 10, then the final commit
    assert phases[0] == "copying" and phases[-2:] == ["committing", "copying"]
    assert phases.count("committing") == commits
    with open_volume(path, key, counter=store, readonly=True) as vol:
        assert vol.read_file("app/d1/f34") == (src / "d1" / "f34").read_bytes()


def _cli(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout + result.stderr


def test_reimport_onto_existing_files_is_a_typed_error_or_an_overwrite(tmp_path: Path) -> None:
    vol, key, counters = tmp_path / "vol", tmp_path / "key", tmp_path / "counters"
    opts: list[str | Path] = ["--key-file", key, "--counter-dir", counters]
    assert _cli("volume", "create", vol, "--new-key", *opts)[0] == 0
    src = _tree(tmp_path / "src", 5)
    assert _cli("volume", "import", vol, src, *opts)[0] == 0
    code, text = _cli("volume", "import", vol, src, *opts)
    assert code == 2, text  # ConfigError, not exit 70
    assert "already exists in the volume" in text and "--overwrite" in text
    (src / "d1" / "f1").write_bytes(b"changed")
    code, text = _cli("volume", "import", vol, src, *opts, "--overwrite", "--json")
    assert code == 0, text
    with open_volume(vol, bytes.fromhex(key.read_text()), counter=LocalFreshness(counters)) as v:
        assert v.read_file("d1/f1") == b"changed"
        assert v.readlink(v.stat("link").ino) == b"d0/f0"


def test_import_of_a_name_too_long_for_the_volume_is_a_typed_error(
    tmp_path: Path, key: bytes, store: MemoryFreshness
) -> None:
    src = tmp_path / "src"
    deep = src
    for _ in range(5):
        deep = deep / ("d" * 250)
    deep.mkdir(parents=True)
    (deep / "f").write_bytes(b"x")
    path = tmp_path / "vol"
    create_volume(path, key, counter=store)
    with open_volume(path, key, counter=store) as vol:
        with pytest.raises(ConfigError, match="too long for a volume"):
            transfer.import_tree(vol, src)


def test_import_from_tar_with_a_directory_where_a_file_is(
    tmp_path: Path, key: bytes, store: MemoryFreshness
) -> None:
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("x")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    path = tmp_path / "vol"
    create_volume(path, key, counter=store)
    with open_volume(path, key, counter=store) as vol:
        vol.write_file("x", b"a file")
        with pytest.raises(ConfigError, match="already exists"):
            transfer.import_tree(vol, archive)
