"""load_spec: file-level refusals (missing, not UTF-8, not TOML, too big) and path resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from sealpod.errors import SpecError
from sealpod.spec.load import MAX_SPEC_SIZE, image_source, load_spec
from sealpod.spec.template import EXAMPLE_SPEC


def test_loads_the_example(tmp_path: Path) -> None:
    path = tmp_path / "sealpod.toml"
    path.write_text(EXAMPLE_SPEC)
    spec = load_spec(path)
    assert spec.identity.product_id == 1
    assert image_source(spec, path) == tmp_path / "rootfs"


def test_absolute_image_source_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "sealpod.toml"
    path.write_text(EXAMPLE_SPEC.replace('source = "rootfs"', 'source = "/srv/image.tar"'))
    assert image_source(load_spec(path), path) == Path("/srv/image.tar")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read pod spec"):
        load_spec(tmp_path / "nope.toml")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_bytes(b'[image]\nsource = "\xff"\n')
    with pytest.raises(SpecError, match="not UTF-8"):
        load_spec(path)


def test_not_toml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("[image]\nsource = \n")
    with pytest.raises(SpecError, match=r"not valid TOML.*line 2"):
        load_spec(path)


def test_too_large(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_bytes(b"#" * (MAX_SPEC_SIZE + 1))
    with pytest.raises(SpecError, match="larger than"):
        load_spec(path)


def test_validation_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(EXAMPLE_SPEC.replace("svn = 1", 'svn = "1"'))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(path) in info.value.message
    assert "identity.svn: expected an integer, got a string ('1')" in info.value.message
