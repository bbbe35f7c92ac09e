"""Bundles end to end in the library: build, the contract attributes, reproducibility, every
kind of tampering found and reported together, signature and signer refusals."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealpod.build.bundle import Bundle, build_bundle, load_bundle, verify_bundle
from sealpod.build.hashing import hash_tree
from sealpod.build.keys import KeyType, generate_key, public_key_der
from sealpod.build.manifest import Observed, TrustedFilter, make_manifest
from sealpod.errors import (
    ArchiveError,
    BundleError,
    BundleIntegrityError,
    SignatureError,
    SpecError,
)
from sealpod.spec.load import image_source, load_spec
from sealpod.spec.model import PodSpec, parse_spec
from sealpod.spec.template import EXAMPLE_SPEC, write_example

KEY = generate_key(KeyType.ED25519)
WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def example(where: Path) -> tuple[PodSpec, Path]:
    write_example(where)
    spec = load_spec(where / "sealpod.toml")
    return spec, image_source(spec, where / "sealpod.toml")


def build(where: Path, out: Path) -> Bundle:
    spec, image = example(where)
    return build_bundle(spec, image=image, key=KEY, out=out, signed_at=WHEN)


@pytest.fixture
def bundle(tmp_path: Path) -> Bundle:
    return build(tmp_path / "demo", tmp_path / "out")


def test_build_writes_the_three_parts(bundle: Bundle) -> None:
    assert sorted(p.name for p in bundle.path.iterdir()) == [
        "manifest.json",
        "rootfs",
        "signature.json",
    ]
    assert (bundle.rootfs / "app/bin/hello").is_file()


def test_contract_attributes(bundle: Bundle) -> None:
    raw = (bundle.path / "manifest.json").read_bytes()
    assert bundle.measurement == hashlib.sha256(raw).digest() and len(bundle.measurement) == 32
    assert bundle.signer_id == hashlib.sha256(public_key_der(KEY.public_key())).digest()
    loaded = load_bundle(bundle.path)
    assert loaded.measurement == bundle.measurement
    assert loaded.signer_id == bundle.signer_id
    m = loaded.manifest
    assert (m.identity.product_id, m.identity.svn) == (1, 1)
    assert m.tee.debug is False and m.tee.backends == ["sgx", "snp", "tdx", "sim"]
    assert [v.name for v in m.volumes] == ["app-data"]
    assert m.process.entrypoint == "/app/bin/hello"
    assert [f.path for f in m.files] == ["/run/secrets/tls.key"]
    assert loaded.path == bundle.path


def test_verify_passes_on_a_fresh_bundle(bundle: Bundle) -> None:
    report = verify_bundle(bundle.path, signer=bundle.signer_id)
    assert report.measurement == bundle.measurement
    assert report.file_count == 3
    assert report.to_dict()["ok"] is True


def test_reproducible_across_mtimes_and_creation_order(tmp_path: Path) -> None:
    first = build(tmp_path / "a", tmp_path / "out-a")
    # the same tree again, created in reverse order with other mtimes
    _, image_a = example(tmp_path / "a2")
    spec, _ = example(tmp_path / "b")
    image_b = tmp_path / "b" / "rootfs"
    shutil.rmtree(image_b)
    paths = sorted(image_a.rglob("*"), reverse=True)
    for p in sorted(paths, key=lambda p: len(p.parts)):
        target = image_b / p.relative_to(image_a)
        target.parent.mkdir(parents=True, exist_ok=True)
        if p.is_symlink():
            target.symlink_to(os.readlink(p))
        elif p.is_dir():
            target.mkdir(exist_ok=True)
        else:
            target.write_bytes(p.read_bytes())
    for p in [image_b, *image_b.rglob("*")]:
        if not p.is_symlink():
            p.chmod((image_a / p.relative_to(image_b)).stat().st_mode & 0o7777)
            os.utime(p, (1_000_000, 1_000_000))
    second = build_bundle(spec, image=image_b, key=KEY, out=tmp_path / "out-b", signed_at=WHEN)
    assert first.manifest_bytes == second.manifest_bytes
    assert (tmp_path / "out-a/manifest.json").read_bytes() == (
        tmp_path / "out-b/manifest.json"
    ).read_bytes()
    assert first.measurement == second.measurement
    # Ed25519 is deterministic, so with the same date even signature.json is identical
    assert (tmp_path / "out-a/signature.json").read_bytes() == (
        tmp_path / "out-b/signature.json"
    ).read_bytes()


def test_existing_output_is_refused(bundle: Bundle, tmp_path: Path) -> None:
    spec, image = example(tmp_path / "again")
    with pytest.raises(BundleError, match="already exists"):
        build_bundle(spec, image=image, key=KEY, out=bundle.path, signed_at=WHEN)


def test_missing_image(tmp_path: Path) -> None:
    spec, _ = example(tmp_path / "d")
    with pytest.raises(SpecError, match="does not exist"):
        build_bundle(spec, image=tmp_path / "nope", key=KEY, out=tmp_path / "o", signed_at=WHEN)


def test_output_inside_the_image_is_refused(tmp_path: Path) -> None:
    spec, image = example(tmp_path / "d")
    with pytest.raises(BundleError, match="lies inside the image"):
        build_bundle(spec, image=image, key=KEY, out=image / "out", signed_at=WHEN)


def test_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    spec, image = example(tmp_path / "d")
    (image / "app/bin/hello").chmod(0o644)  # entrypoint no longer executable
    with pytest.raises(SpecError, match="not executable"):
        build_bundle(spec, image=image, key=KEY, out=tmp_path / "out", signed_at=WHEN)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_special_file_in_image_is_refused(tmp_path: Path) -> None:
    spec, image = example(tmp_path / "d")
    os.mkfifo(image / "app/pipe")
    with pytest.raises(ArchiveError, match="FIFO"):
        build_bundle(spec, image=image, key=KEY, out=tmp_path / "out", signed_at=WHEN)
    assert not (tmp_path / "out").exists()


def _docker_save(path: Path, files: dict[str, bytes]) -> None:
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.mode = 0o755
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    blob = layer.getvalue()
    digest = hashlib.sha256(blob).hexdigest()
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "config": {},
         "rootfs": {"type": "layers", "diff_ids": [f"sha256:{digest}"]}}
    ).encode()  # fmt: skip
    config_name = f"{hashlib.sha256(config).hexdigest()}.json"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": ["demo:1"], "Layers": [f"{digest}/layer.tar"]}]
    ).encode()
    with tarfile.open(path, "w") as out:
        for name, data in [
            (config_name, config),
            (f"{digest}/layer.tar", blob),
            ("manifest.json", manifest),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))


def test_build_from_a_docker_save_archive(tmp_path: Path) -> None:
    pytest.importorskip("sealpod.build.image")
    spec, _ = example(tmp_path / "d")
    archive = tmp_path / "image.tar"
    _docker_save(archive, {"app/bin/hello": b"#!/bin/sh\necho hi\n"})
    b = build_bundle(
        spec.model_copy(update={"volumes": []}),
        image=archive,
        key=KEY,
        out=tmp_path / "o",
        signed_at=WHEN,
    )
    assert (b.rootfs / "app/bin/hello").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert verify_bundle(b.path).file_count == 1


def test_archive_that_is_not_an_image_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("sealpod.build.image")
    spec, _ = example(tmp_path / "d")
    archive = tmp_path / "junk.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("readme")
        tf.addfile(info, io.BytesIO(b""))
    with pytest.raises(ArchiveError):
        build_bundle(spec, image=archive, key=KEY, out=tmp_path / "o", signed_at=WHEN)
    assert not (tmp_path / "o").exists()


# --- tampering ------------------------------------------------------------------------------
def _diffs(path: Path) -> list[tuple[str, str]]:
    with pytest.raises(BundleIntegrityError) as info:
        verify_bundle(path)
    assert info.value.exit_code == 4
    return [(d.kind, d.path) for d in info.value.differences]  # type: ignore[attr-defined]


def test_modified_file(bundle: Bundle) -> None:
    (bundle.rootfs / "app/etc/greeting.conf").write_text('GREETING="pwned"\n')
    assert _diffs(bundle.path) == [("modified", "/app/etc/greeting.conf")]


def test_same_size_modification(bundle: Bundle) -> None:
    p = bundle.rootfs / "app/bin/hello"
    data = bytearray(p.read_bytes())
    data[-2] ^= 1
    p.write_bytes(bytes(data))
    assert _diffs(bundle.path) == [("modified", "/app/bin/hello")]


def test_all_differences_at_once(bundle: Bundle) -> None:
    root = bundle.rootfs
    (root / "app/etc/greeting.conf").write_text("x")
    (root / "app/README.txt").unlink()
    (root / "app/bin/hello").chmod(0o777)
    (root / "app/bin/hi").unlink()
    (root / "app/bin/hi").symlink_to("/bin/sh")
    (root / "app/extra").write_text("planted")
    (root / "data").rmdir()
    (root / "data").write_text("now a file")
    assert _diffs(bundle.path) == [
        ("missing", "/app/README.txt"),
        ("mode-changed", "/app/bin/hello"),
        ("symlink-retargeted", "/app/bin/hi"),
        ("modified", "/app/etc/greeting.conf"),
        ("extra", "/app/extra"),
        ("type-changed", "/data"),
    ]


def test_removed_rootfs_reports_every_entry_missing(bundle: Bundle) -> None:
    shutil.rmtree(bundle.rootfs)
    diffs = _diffs(bundle.path)
    assert {k for k, _ in diffs} == {"missing"}
    assert len(diffs) == len(bundle.manifest.trusted.entries)


def test_rootfs_swapped_for_a_symlink_is_not_followed(bundle: Bundle, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(bundle.rootfs, copy, symlinks=True)
    shutil.rmtree(bundle.rootfs)
    bundle.rootfs.symlink_to(copy)
    assert {k for k, _ in _diffs(bundle.path)} == {"missing"}


def test_edited_manifest_breaks_the_signature(bundle: Bundle) -> None:
    manifest = bundle.path / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(b'"svn":1', b'"svn":9'))
    with pytest.raises(SignatureError, match="is for measurement"):
        verify_bundle(bundle.path)


def test_re_serialized_manifest_is_refused(bundle: Bundle) -> None:
    manifest = bundle.path / "manifest.json"
    manifest.write_text(json.dumps(json.loads(manifest.read_bytes()), indent=2))
    with pytest.raises(BundleIntegrityError, match="canonical"):
        verify_bundle(bundle.path)


def test_signature_of_another_bundle_is_refused(bundle: Bundle, tmp_path: Path) -> None:
    spec, image = example(tmp_path / "other")
    other = build_bundle(
        spec.model_copy(update={"identity": spec.identity.model_copy(update={"svn": 2})}),
        image=image, key=KEY, out=tmp_path / "other-out", signed_at=WHEN,
    )  # fmt: skip
    shutil.copy(other.path / "signature.json", bundle.path / "signature.json")
    with pytest.raises(SignatureError, match="another bundle"):
        load_bundle(bundle.path)


def test_resigned_by_another_author_is_caught_by_the_signer_pin(
    bundle: Bundle, tmp_path: Path
) -> None:
    spec, image = example(tmp_path / "mallory")
    mallory = generate_key(KeyType.ED25519)
    forged = build_bundle(spec, image=image, key=mallory, out=tmp_path / "forged", signed_at=WHEN)
    assert forged.measurement == bundle.measurement  # same content ...
    verify_bundle(forged.path)  # ... and a valid signature, by someone else:
    with pytest.raises(SignatureError, match="expected"):
        verify_bundle(forged.path, signer=bundle.signer_id)


@pytest.mark.parametrize("missing", ["manifest.json", "signature.json"])
def test_not_a_bundle(bundle: Bundle, missing: str) -> None:
    (bundle.path / missing).unlink()
    with pytest.raises(BundleError, match=f"{missing} is missing"):
        load_bundle(bundle.path)


def test_manifest_that_is_a_directory(bundle: Bundle) -> None:
    (bundle.path / "manifest.json").unlink()
    (bundle.path / "manifest.json").mkdir()
    with pytest.raises(BundleIntegrityError, match="not a regular file"):
        load_bundle(bundle.path)


def test_path_that_is_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a directory"):
        load_bundle(tmp_path / "nothing")


# --- the property, on real files ------------------------------------------------------------
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    files=st.lists(st.binary(max_size=300), min_size=1, max_size=5),
    which=st.integers(min_value=0),
    new_content=st.binary(max_size=300),
    new_mode=st.integers(0, 0o7777),
    change_mode=st.booleans(),
)
def test_any_change_to_a_file_changes_the_measurement(
    files: list[bytes], which: int, new_content: bytes, new_mode: int, change_mode: bool
) -> None:
    spec = parse_spec(tomllib.loads(EXAMPLE_SPEC))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "app/bin").mkdir(parents=True)
        (root / "app/bin/hello").write_bytes(b"#!/bin/sh\n")
        (root / "app/bin/hello").chmod(0o755)
        for i, data in enumerate(files):
            (root / f"app/f{i}").write_bytes(data)
            (root / f"app/f{i}").chmod(0o644)
        lean = spec.model_copy(update={"volumes": [], "files": []})

        def measure() -> bytes:
            found = hash_tree(root, trusted=TrustedFilter(("/",)), strict=True)
            return make_manifest(lean, found).measurement

        before = measure()
        target = root / f"app/f{which % len(files)}"
        if change_mode:
            new_mode |= 0o400  # stay readable when the tests do not run as root
            if new_mode == 0o644:
                return
            target.chmod(new_mode)
        else:
            if new_content == target.read_bytes():
                return
            target.write_bytes(new_content)
        assert measure() != before
        target.chmod(0o644)


def test_verify_does_not_read_resized_or_extra_files(
    bundle: Bundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sealpod.build.hashing as hashing

    big = bundle.rootfs / "app/etc/greeting.conf"
    with big.open("r+b") as fh:
        fh.truncate(1 << 40)  # a sparse terabyte: reading it would never finish
    (bundle.rootfs / "app/planted").write_bytes(b"x" * 10)
    read: list[str] = []
    real = hashing._read_file

    def spy(path: str, item: Observed, *args: Any, **kwargs: Any) -> Observed:
        read.append(item.path)
        return real(path, item, *args, **kwargs)

    monkeypatch.setattr(hashing, "_read_file", spy)
    assert _diffs(bundle.path) == [
        ("modified", "/app/etc/greeting.conf"),
        ("extra", "/app/planted"),
    ]
    assert sorted(read) == ["/app/README.txt", "/app/bin/hello"]


def test_missing_parent_directories_are_created(tmp_path: Path) -> None:
    b = build(tmp_path / "demo", tmp_path / "deep/er/out")
    assert load_bundle(b.path).measurement == b.measurement


def test_unwritable_output_is_a_bundle_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(BundleError, match="cannot write bundle"):
        build(tmp_path / "demo", tmp_path / "file/out")
