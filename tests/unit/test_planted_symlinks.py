"""Every writer sealpod has, against a symlink planted where it writes (issue 17.4).

A directory a user names (``--out-dir``, an output directory, a shared ``/tmp``) can hold a
symlink someone else planted, pointing at a file of the user's. Each writer must refuse with its
typed error (or remove the link itself) and leave the link's target untouched. The volume's own
host directory is covered in tests/volume/test_symlinks.py.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from sealpod import _files
from sealpod.errors import BundleError, ConfigError, VolumeError

SECRET = b"correct horse battery staple"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file of the user's that a planted symlink points at."""
    path = tmp_path / "victim" / "precious.txt"
    path.parent.mkdir()
    path.write_bytes(b"keep me")
    return path


def _plant(link: Path, target: Path) -> Path:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    return link


# --- the shared helpers ---------------------------------------------------------------------
def test_write_atomic_refuses_a_symlink(tmp_path: Path, victim: Path) -> None:
    link = _plant(tmp_path / "out" / "f", victim)
    with pytest.raises(OSError) as info:
        _files.write_atomic(link, SECRET)
    assert info.value.errno == errno.ELOOP
    assert victim.read_bytes() == b"keep me"
    assert link.is_symlink()
    assert sorted(p.name for p in link.parent.iterdir()) == ["f"]  # no temporary file left


def test_write_atomic_refuses_a_fifo(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OSError) as info:
        _files.write_atomic(tmp_path / "fifo", SECRET)
    assert info.value.errno == errno.EINVAL


def test_write_atomic_replaces_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"old")
    _files.write_atomic(tmp_path / "f", SECRET, mode=0o600)
    assert (tmp_path / "f").read_bytes() == SECRET
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o600


def test_write_new_refuses_a_symlink_to_a_missing_file(tmp_path: Path) -> None:
    target = tmp_path / "would-be-created"
    link = _plant(tmp_path / "out" / "f", target)
    with pytest.raises(OSError) as info:
        _files.write_new(link, SECRET)
    assert info.value.errno == errno.ELOOP
    assert not target.exists()


def test_open_subdir_refuses_a_symlinked_directory(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    fd = _files.open_dir(tmp_path)
    try:
        with pytest.raises(OSError) as info:
            _files.open_subdir(fd, "link", create=True)
        assert info.value.errno == errno.ELOOP
    finally:
        os.close(fd)


def test_open_regular_does_not_hang_on_a_fifo(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    fd = _files.open_dir(tmp_path)
    try:
        with pytest.raises(OSError) as info:
            _files.open_regular(fd, "fifo", os.O_RDWR)
        assert info.value.errno == errno.EINVAL
    finally:
        os.close(fd)


# --- the writers ------------------------------------------------------------------------------
def test_kms_fetch_out_dir_does_not_write_a_secret_through_a_symlink(
    tmp_path: Path, victim: Path
) -> None:
    # `kms fetch --out-dir`, `kms secret get --out`, `kms user add --out-token` and the files
    # `kms init` writes all go through _write_private.
    from sealpod.cli.kms._shared import _write_private

    link = _plant(tmp_path / "shared-out" / "db-password", victim)
    with pytest.raises(ConfigError, match="symbolic link"):
        _write_private(link, SECRET)
    assert victim.read_bytes() == b"keep me"
    _write_private(tmp_path / "shared-out" / "other", SECRET)
    assert (tmp_path / "shared-out" / "other").stat().st_mode & 0o777 == 0o600


def test_tee_output_is_not_written_through_a_symlink(tmp_path: Path, victim: Path) -> None:
    from sealpod.cli.tee import _write_output

    link = _plant(tmp_path / "out" / "evidence.bin", victim)
    with pytest.raises(ConfigError, match="symbolic link"):
        _write_output(link, b"evidence")
    assert victim.read_bytes() == b"keep me"


def test_volume_counter_store_ignores_a_planted_temporary_file(
    tmp_path: Path, victim: Path
) -> None:
    from sealpod.volume import LocalFreshness

    counters = tmp_path / "counters"
    vid = "ab" * 16
    # The old writer used a predictable temporary name, opened without O_EXCL/O_NOFOLLOW.
    _plant(counters / f"{vid}.tmp{os.getpid()}", victim)
    LocalFreshness(counters).advance(vid, 0, 3)
    assert victim.read_bytes() == b"keep me"
    assert LocalFreshness(counters).get(vid) == 3


def test_volume_counter_store_refuses_a_symlinked_counter(tmp_path: Path, victim: Path) -> None:
    from sealpod.volume import LocalFreshness

    counters = tmp_path / "counters"
    vid = "cd" * 16
    victim.write_bytes(b"0\n")
    _plant(counters / f"{vid}.counter", victim)
    with pytest.raises(VolumeError, match="symbolic link"):
        LocalFreshness(counters).advance(vid, 0, 3)
    assert victim.read_bytes() == b"0\n"


def test_kms_server_info_file_ignores_a_planted_temporary_file(
    tmp_path: Path, victim: Path
) -> None:
    from sealpod.kms.server import _write_info

    info = tmp_path / "home" / "server.json"
    _plant(info.with_suffix(".tmp"), victim)
    _write_info(info, {"url": "https://127.0.0.1:1"})
    assert victim.read_bytes() == b"keep me"
    assert b"127.0.0.1" in info.read_bytes()


def test_init_force_removes_a_planted_spec_symlink(tmp_path: Path, victim: Path) -> None:
    from sealpod.spec.template import write_example

    _plant(tmp_path / "proj" / "sealpod.toml", victim)
    write_example(tmp_path / "proj", force=True)
    assert victim.read_bytes() == b"keep me"
    assert not (tmp_path / "proj" / "sealpod.toml").is_symlink()


def test_init_refuses_a_symlinked_rootfs_subdirectory(tmp_path: Path) -> None:
    from sealpod.spec.template import write_example

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _plant(tmp_path / "proj" / "rootfs" / "app", elsewhere)
    with pytest.raises(ConfigError, match="symbolic link"):
        write_example(tmp_path / "proj", force=True)
    assert list(elsewhere.iterdir()) == []


def test_oci_layout_is_not_written_through_a_symlink_planted_after_the_check(
    tmp_path: Path, victim: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sealpod.build.oci as oci

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "f").write_bytes(b"x")
    out = tmp_path / "oci"
    real = oci.prepare_empty_dir  # type: ignore[attr-defined]

    def racing(path: Path, what: str) -> bool:
        created = real(path, what)
        _plant(path / "index.json", victim)  # another user, between the check and the write
        return created

    monkeypatch.setattr(oci, "prepare_empty_dir", racing)
    with pytest.raises(BundleError, match="symbolic link"):
        oci.write_oci_layout(bundle, out, annotations={})
    assert victim.read_bytes() == b"keep me"


def test_rekey_shares_are_not_written_through_a_link_swapped_in_after_the_claim(
    tmp_path: Path, victim: Path
) -> None:
    from sealpod.kms.keyfiles import claim_share_files, write_shares
    from sealpod.kms.shamir import split

    shares_dir = tmp_path / "shares"
    paths = claim_share_files(shares_dir, 3, "new")
    paths[1].unlink()
    paths[1].symlink_to(victim)  # another user of a shared shares directory
    with pytest.raises(ConfigError, match="could not be stored"):
        write_shares(shares_dir, "new", split(os.urandom(32), shares=3, threshold=2))
    assert victim.read_bytes() == b"keep me"


def test_rekey_lock_is_not_created_through_a_planted_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sealpod.kms.keyfiles import key_file_lock

    key_file = tmp_path / "keys" / "master.key"
    key_file.parent.mkdir()
    target = tmp_path / "elsewhere" / "created-by-the-link"
    target.parent.mkdir()
    (key_file.parent / "master.key.lock").symlink_to(target)
    monkeypatch.setenv("SEALPOD_HOME", str(tmp_path / "home"))
    with key_file_lock(key_file):
        pass
    assert not target.exists()
