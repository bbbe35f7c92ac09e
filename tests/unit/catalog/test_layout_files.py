"""Laying a recipe onto someone else's image: never through a symlink, users added once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sealpod.catalog.recipes import get_recipe
from sealpod.catalog.rootfs import apply_layout, ensure_user, scrub, write_file
from sealpod.errors import ArchiveError, ConfigError


def _image(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\nredis:x:999:999::/:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    return root


def test_a_recipe_lays_its_files_dirs_and_user_with_their_modes(tmp_path: Path) -> None:
    root = _image(tmp_path / "root")
    (root / "etc" / "redis").mkdir(mode=0o750)
    recipe = get_recipe("redis")
    layout = recipe.render(recipe.defaults())
    apply_layout(root, recipe, layout)
    entry = root / "usr/local/sbin/sealpod-redis-entry"
    assert entry.stat().st_mode & 0o777 == 0o755
    assert (root / "etc/redis/sealpod.conf").read_text().startswith("# sealpod catalog")
    assert (root / "etc/redis").stat().st_mode & 0o055 == 0o055  # the service can read it
    assert (root / "var/lib/redis").is_dir()
    assert (root / "etc/passwd").read_text().count("redis:") == 1  # the image's account kept


def test_a_missing_service_account_is_added_once(tmp_path: Path) -> None:
    root = _image(tmp_path / "root")
    ensure_user(root, "app", 1000)
    ensure_user(root, "app", 1000)
    assert (root / "etc/passwd").read_text().count("\napp:x:1000:1000:") == 1
    assert "app:x:1000:" in (root / "etc/group").read_text()


@pytest.mark.parametrize("link", ["/etc", "../../outside", "/"])
def test_a_symlinked_directory_in_the_image_is_refused_not_followed(
    tmp_path: Path, link: str
) -> None:
    root = _image(tmp_path / "root")
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "etc" / "redis").symlink_to(link)
    recipe = get_recipe("redis")
    with pytest.raises(ArchiveError, match="symlink"):
        apply_layout(root, recipe, recipe.render(recipe.defaults()))
    assert not (outside / "sealpod.conf").exists()
    assert not (tmp_path / "sealpod.conf").exists()


def test_a_symlinked_file_is_replaced_not_written_through(tmp_path: Path) -> None:
    root = _image(tmp_path / "root")
    victim = tmp_path / "victim"
    victim.write_text("host file")
    (root / "etc" / "redis").mkdir()
    (root / "etc" / "redis" / "sealpod.conf").symlink_to(victim)
    write_file(root, "/etc/redis/sealpod.conf", b"x", 0o644)
    assert victim.read_text() == "host file"
    assert not (root / "etc/redis/sealpod.conf").is_symlink()


def test_a_passwd_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    root = _image(tmp_path / "root")
    os.unlink(root / "etc" / "passwd")
    (root / "etc" / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(ArchiveError):
        ensure_user(root, "app", 1000)


@pytest.mark.parametrize("path", ["relative", "/a/../b", "/", "/a/./b"])
def test_unnormalized_recipe_paths_are_refused(tmp_path: Path, path: str) -> None:
    with pytest.raises(ConfigError):
        write_file(_image(tmp_path / "root"), path, b"x", 0o644)


def test_scrub_removes_build_state_and_device_nodes(tmp_path: Path) -> None:
    root = _image(tmp_path / "root")
    for rel in ("var/log/dpkg.log", "var/cache/ldconfig/aux-cache", "etc/passwd-",
                "etc/ssl/private/ssl-cert-snakeoil.key", "dev/pts/x"):  # fmt: skip
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    (root / "dev" / "null").symlink_to("/dev/null")
    scrub(root)
    assert (root / "var/log").is_dir() and not any((root / "var/log").iterdir())
    assert not (root / "var/cache/ldconfig/aux-cache").exists()
    assert not (root / "etc/passwd-").exists()
    assert not (root / "etc/ssl/private/ssl-cert-snakeoil.key").exists()
    assert not any((root / "dev").iterdir())
    assert (root / "etc/passwd").is_file()


def test_install_leftovers_are_removed_without_following_links(tmp_path: Path) -> None:
    root = _image(tmp_path / "root")
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "f").write_text("x")
    (root / "var/lib/postgresql/15/main").mkdir(parents=True)
    (root / "etc/postgresql").mkdir(parents=True)
    (root / "etc/postgresql/15").symlink_to(keep)
    recipe = get_recipe("postgresql")
    apply_layout(root, recipe, recipe.render(recipe.defaults()))
    assert not (root / "var/lib/postgresql/15").exists()
    assert not (root / "etc/postgresql/15").is_symlink()
    assert (keep / "f").exists()
