"""write_oci_layout: a valid, deterministic OCI layout that materialize_image reads back."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from sealpod.build.image import materialize_image
from sealpod.build.oci import write_oci_layout
from sealpod.errors import BundleError, ConfigError
from sealpod.testing.trees import snapshot_tree as tree

ANNOTATIONS = {"org.sealpod.measurement": "ab" * 32, "org.sealpod.signer": "cd" * 32}


def make_bundle(root: Path) -> Path:
    """A bundle-shaped tree: rootfs with nested dirs, modes, links, a long and a non-ASCII name."""
    (root / "rootfs/usr/bin").mkdir(parents=True)
    (root / "rootfs/usr/bin/app").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "rootfs/usr/bin/app").chmod(0o755)
    (root / "rootfs/etc").mkdir()
    (root / "rootfs/etc/secret.conf").write_bytes(b"mode 600")
    (root / "rootfs/etc/secret.conf").chmod(0o600)
    (root / "rootfs/bin").symlink_to("usr/bin")
    (root / "rootfs/ro").mkdir(mode=0o555)
    (root / "rootfs/ro").chmod(0o555)
    deep = root / "rootfs" / ("d" * 90) / ("e" * 90)
    deep.mkdir(parents=True)
    (deep / "long-name-needs-pax.txt").write_bytes(b"x" * 5000)
    (root / "rootfs/caf\u00e9.txt").write_text("non-ascii name")
    (root / "manifest.json").write_bytes(b'{"files":[]}')
    (root / "signature.json").write_bytes(b'{"sig":""}')
    return root


def load(layout: Path, digest: str) -> dict[str, object]:
    data = (layout / "blobs/sha256" / digest.split(":")[1]).read_bytes()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
    result: dict[str, object] = json.loads(data)
    return result


def test_layout_is_valid_and_carries_annotations(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    digest = write_oci_layout(bundle, tmp_path / "oci", annotations=ANNOTATIONS)
    oci = tmp_path / "oci"
    assert json.loads((oci / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((oci / "index.json").read_bytes())
    assert index["schemaVersion"] == 2
    [entry] = index["manifests"]
    assert entry["digest"] == digest
    assert entry["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert entry["platform"] == {"architecture": "amd64", "os": "linux"}
    manifest = load(oci, digest)
    assert manifest["annotations"] == ANNOTATIONS
    assert entry["size"] == len((oci / "blobs/sha256" / digest[7:]).read_bytes())
    config_desc = manifest["config"]
    assert isinstance(config_desc, dict)
    config = load(oci, config_desc["digest"])
    assert config["config"] == {"Labels": ANNOTATIONS}
    layers = manifest["layers"]
    assert isinstance(layers, list) and len(layers) == 1
    layer_path = oci / "blobs/sha256" / layers[0]["digest"][7:]
    assert layers[0]["size"] == layer_path.stat().st_size
    assert config["rootfs"] == {"type": "layers", "diff_ids": [layers[0]["digest"]]}
    # Every blob in the store is referenced and named by its own digest.
    for blob in (oci / "blobs/sha256").iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name


def test_layer_tar_is_normalized(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    digest = write_oci_layout(bundle, tmp_path / "oci", annotations={})
    layers = load(tmp_path / "oci", digest)["layers"]
    assert isinstance(layers, list)
    with tarfile.open(tmp_path / "oci/blobs/sha256" / layers[0]["digest"][7:]) as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names, key=lambda n: tuple(os.fsencode(c) for c in n.split("/")))
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
    assert all(m.uname == "" and m.gname == "" for m in members)


def test_same_bundle_gives_same_digest_whatever_times_and_inodes(tmp_path: Path) -> None:
    first = make_bundle(tmp_path / "a")
    d1 = write_oci_layout(first, tmp_path / "oci1", annotations=ANNOTATIONS)
    # A copy made later: new inodes, new mtimes, files created in another order.
    second = tmp_path / "b"
    shutil.copytree(first, second, symlinks=True)
    for p in second.rglob("*"):
        os.utime(p, (1_000_000_000, 1_000_000_000), follow_symlinks=False)
    d2 = write_oci_layout(
        second, tmp_path / "oci2", annotations=dict(reversed(ANNOTATIONS.items()))
    )
    assert d1 == d2
    blobs1 = {p.name: p.read_bytes() for p in (tmp_path / "oci1/blobs/sha256").iterdir()}
    blobs2 = {p.name: p.read_bytes() for p in (tmp_path / "oci2/blobs/sha256").iterdir()}
    assert blobs1 == blobs2
    assert (tmp_path / "oci1/index.json").read_bytes() == (
        tmp_path / "oci2/index.json"
    ).read_bytes()


def test_any_content_change_changes_the_digest(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    before = write_oci_layout(bundle, tmp_path / "oci1", annotations=ANNOTATIONS)
    (bundle / "rootfs/etc/secret.conf").chmod(0o640)
    after_mode = write_oci_layout(bundle, tmp_path / "oci2", annotations=ANNOTATIONS)
    changed = {**ANNOTATIONS, "org.sealpod.signer": "ee" * 32}
    after_ann = write_oci_layout(bundle, tmp_path / "oci3", annotations=changed)
    assert len({before, after_mode, after_ann}) == 3


@pytest.mark.parametrize("gzip_layer", [False, True], ids=["tar", "gzip"])
def test_materialize_reads_the_layout_back_identical(tmp_path: Path, gzip_layer: bool) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    write_oci_layout(bundle, tmp_path / "oci", annotations=ANNOTATIONS, gzip_layer=gzip_layer)
    info = materialize_image(tmp_path / "oci", tmp_path / "back")
    assert tree(tmp_path / "back") == tree(bundle)
    assert info.format == "oci-layout"
    assert info.platform == "linux/amd64"


def test_gzip_layer_is_deterministic_too(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    d1 = write_oci_layout(bundle, tmp_path / "o1", annotations=ANNOTATIONS, gzip_layer=True)
    d2 = write_oci_layout(bundle, tmp_path / "o2", annotations=ANNOTATIONS, gzip_layer=True)
    plain = write_oci_layout(bundle, tmp_path / "o3", annotations=ANNOTATIONS)
    assert d1 == d2 != plain


def test_out_dir_must_be_empty(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy/x").write_text("x")
    with pytest.raises(ConfigError, match="is not empty"):
        write_oci_layout(bundle, tmp_path / "busy", annotations={})
    (tmp_path / "empty").mkdir()
    write_oci_layout(bundle, tmp_path / "empty", annotations={})


def test_bad_annotation_is_refused(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    with pytest.raises(ConfigError, match="annotation ''"):
        write_oci_layout(bundle, tmp_path / "oci", annotations={"": "x"})
    assert not (tmp_path / "oci").exists()


def test_bundle_with_fifo_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    os.mkfifo(bundle / "rootfs/pipe")
    with pytest.raises(BundleError, match="'rootfs/pipe' is not a file, directory or symlink"):
        write_oci_layout(bundle, tmp_path / "oci", annotations={})
    assert not (tmp_path / "oci").exists()


def test_missing_bundle_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="is not a directory"):
        write_oci_layout(tmp_path / "nope", tmp_path / "oci", annotations={})


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed (optional)")
def test_skopeo_accepts_the_layout(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    write_oci_layout(bundle, tmp_path / "oci", annotations=ANNOTATIONS)
    out = subprocess.run(
        ["skopeo", "inspect", f"oci:{tmp_path / 'oci'}"],
        check=True,
        capture_output=True,
        timeout=120,
        text=True,
    )
    assert json.loads(out.stdout)["Labels"] == ANNOTATIONS
