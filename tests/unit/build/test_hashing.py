"""Walking, hashing and copying trees: exact hashes at chunk edges, no symlink ever followed,
special files and odd names refused, modes kept, progress accounted."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path

import pytest

from sealpod.build.hashing import CHUNK_SIZE, copy_tree, hash_tree, scan
from sealpod.errors import ArchiveError, BundleError

SIZES = [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 5]


def everything(_: str) -> bool:
    return True


def make_tree(root: Path) -> None:
    (root / "app/bin").mkdir(parents=True)
    (root / "app/bin/run").write_bytes(b"#!/bin/sh\n")
    (root / "app/bin/run").chmod(0o4755)
    (root / "app/ro").mkdir()
    (root / "app/ro/data").write_bytes(b"read only")
    (root / "app/ro").chmod(0o555)
    (root / "app/link").symlink_to("bin/run")
    (root / "app/dangling").symlink_to("/does/not/exist")
    (root / "etc").mkdir()
    (root / "etc/conf").write_bytes(b"x" * 5000)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    root.mkdir()
    make_tree(root)
    return root


def test_scan_kinds_modes_and_order(tree: Path) -> None:
    found = {o.path: o for o in scan(tree, strict=True)}
    assert list(found) == sorted(found)
    assert found["/app/bin/run"].kind == "file" and found["/app/bin/run"].mode == 0o4755
    assert found["/app/ro"].kind == "dir" and found["/app/ro"].mode == 0o555
    assert found["/app/link"].target == "bin/run"
    assert found["/app/dangling"].target == "/does/not/exist"
    assert found["/etc/conf"].size == 5000


def test_symlinked_directory_is_not_walked(tree: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host file")
    (tree / "escape").symlink_to(outside)
    paths = [o.path for o in scan(tree, strict=True)]
    assert "/escape" in paths and "/escape/secret" not in paths


@pytest.mark.parametrize("size", SIZES)
def test_hash_matches_hashlib_at_chunk_edges(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    (tmp_path / "f").write_bytes(data)
    (item,) = hash_tree(tmp_path, trusted=everything, strict=True)
    assert item.sha256 == hashlib.sha256(data).hexdigest()
    assert item.size == size


def test_thread_count_does_not_change_results(tmp_path: Path) -> None:
    for i in range(300):
        (tmp_path / f"f{i:03}").write_bytes(os.urandom(i * 97))
    (tmp_path / "big").write_bytes(os.urandom(2 * CHUNK_SIZE + 3))
    one = hash_tree(tmp_path, trusted=everything, strict=True, workers=1)
    many = hash_tree(tmp_path, trusted=everything, strict=True, workers=4)
    assert one == many
    assert all(
        o.sha256 == hashlib.sha256((tmp_path / o.path[1:]).read_bytes()).hexdigest() for o in one
    )


def test_only_trusted_paths_are_returned(tree: Path) -> None:
    items = hash_tree(tree, trusted=lambda p: p.startswith("/etc"), strict=True)
    assert [o.path for o in items] == ["/etc", "/etc/conf"]


def test_special_file_is_refused_when_strict(tree: Path) -> None:
    os.mkfifo(tree / "app/pipe")
    with pytest.raises(ArchiveError, match="/app/pipe is a FIFO"):
        scan(tree, strict=True)


def test_special_file_is_reported_when_not_strict(tree: Path) -> None:
    os.mkfifo(tree / "app/pipe")
    (pipe,) = [o for o in scan(tree, strict=False) if o.path == "/app/pipe"]
    assert pipe.kind == "other" and pipe.detail == "FIFO"
    # and hashing skips it rather than blocking on open()
    items = hash_tree(tree, trusted=everything, strict=False)
    assert any(o.path == "/app/pipe" and o.sha256 is None for o in items)


def test_non_utf8_name_is_refused_when_strict(tmp_path: Path) -> None:
    Path(os.fsdecode(os.fsencode(tmp_path) + b"/bad\xff")).write_text("x")
    with pytest.raises(ArchiveError, match=r"not valid UTF-8"):
        scan(tmp_path, strict=True)
    assert [o.path for o in scan(tmp_path, strict=False)] == ["/bad\udcff"]


def test_unreadable_directory(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="cannot read directory"):
        scan(tmp_path / "missing", strict=True)


def test_copy_keeps_content_modes_and_links(tree: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    items = copy_tree(tree, dst, trusted=everything)
    assert (dst / "app/ro/data").read_bytes() == b"read only"
    assert stat.S_IMODE((dst / "app/ro").stat().st_mode) == 0o555
    assert stat.S_IMODE((dst / "app/bin/run").stat().st_mode) == 0o4755
    assert os.readlink(dst / "app/link") == "bin/run"
    assert os.readlink(dst / "app/dangling") == "/does/not/exist"
    # the hashes describe the copy exactly as hashing it in place does
    assert items == hash_tree(dst, trusted=everything, strict=True)
    (dst / "app/ro").chmod(0o755)  # let tmp_path clean up


def test_copy_skips_hashing_of_untrusted_files(tree: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    items = copy_tree(tree, dst, trusted=lambda p: p.startswith("/etc"))
    assert [o.path for o in items] == ["/etc", "/etc/conf"]
    assert (dst / "app/bin/run").read_bytes() == b"#!/bin/sh\n"  # still copied
    (dst / "app/ro").chmod(0o755)


def test_copy_refuses_existing_destination(tree: Path, tmp_path: Path) -> None:
    (tmp_path / "dst").mkdir()
    with pytest.raises(BundleError, match="cannot create"):
        copy_tree(tree, tmp_path / "dst", trusted=everything)


def test_copy_refuses_special_files_before_writing(tree: Path, tmp_path: Path) -> None:
    os.mkfifo(tree / "etc/pipe")
    with pytest.raises(ArchiveError, match="FIFO"):
        copy_tree(tree, tmp_path / "dst", trusted=everything)
    assert not (tmp_path / "dst").exists()


class Recorder:
    def __init__(self) -> None:
        self.total = 0
        self.done = 0
        self.lock = threading.Lock()

    def start(self, total_bytes: int, label: str) -> None:
        self.total = total_bytes

    def advance(self, amount: int) -> None:
        with self.lock:
            self.done += amount


def test_progress_adds_up_to_the_total(tmp_path: Path) -> None:
    for i, size in enumerate(SIZES * 3):
        (tmp_path / f"f{i}").write_bytes(b"a" * size)
    recorder = Recorder()
    hash_tree(tmp_path, trusted=everything, strict=True, workers=3, progress=recorder)
    assert recorder.total == sum(SIZES) * 3
    assert recorder.done == recorder.total


def test_file_swapped_for_a_symlink_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "f").write_bytes(b"data")
    (tmp_path / "host-secret").write_bytes(b"secret")
    items = scan(tmp_path, strict=True)

    def swapped_scan(root: Path, *, strict: bool) -> list[object]:
        (tmp_path / "f").unlink()
        (tmp_path / "f").symlink_to(tmp_path / "host-secret")
        return list(items)

    monkeypatch.setattr("sealpod.build.hashing.scan", swapped_scan)
    with pytest.raises(BundleError, match="cannot read /f"):
        hash_tree(tmp_path, trusted=everything, strict=True)


@pytest.mark.timeout(20)
def test_file_swapped_for_a_fifo_does_not_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "f").write_bytes(b"data")
    items = scan(tmp_path, strict=True)

    def swapped_scan(root: Path, *, strict: bool) -> list[object]:
        (tmp_path / "f").unlink()
        os.mkfifo(tmp_path / "f")  # opening this for reading would wait for a writer forever
        return list(items)

    monkeypatch.setattr("sealpod.build.hashing.scan", swapped_scan)
    with pytest.raises(BundleError, match="stopped being a regular file"):
        hash_tree(tmp_path, trusted=everything, strict=True)
