"""``write_image`` with a small stand-in base layer (the real base needs mmdebstrap: see
tests/e2e/test_cli_image.py): both archive formats read back by sealpod's own hostile-archive
reader, the config the runtime needs, byte-for-byte reproducibility, and refusals."""

from __future__ import annotations

import json
import os
import tarfile
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sealpod.build.bundle import Bundle, build_bundle, load_bundle
from sealpod.build.image import materialize_image
from sealpod.build.keys import KeyType, generate_key
from sealpod.build.oci import write_layer
from sealpod.deploy import container as ct
from sealpod.deploy.base import RuntimeBase
from sealpod.deploy.image import ImageOptions, archive_digest, image_config, write_image
from sealpod.errors import ConfigError
from sealpod.rootfs.debian import DebianRootfs, mmdebstrap_argv
from sealpod.spec.load import image_source, load_spec
from sealpod.spec.template import write_example

KMS_ID = "ab" * 32


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    work = tmp_path_factory.mktemp("bundle")
    write_example(work / "demo")
    spec = load_spec(work / "demo" / "sealpod.toml")
    built = build_bundle(
        spec,
        image=image_source(spec, work / "demo" / "sealpod.toml"),
        key=generate_key(KeyType.ED25519),
        out=work / "bundle",
        signed_at=datetime(2025, 1, 1, tzinfo=UTC),
    )
    return load_bundle(built.path)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> RuntimeBase:
    """A stand-in for the Debian base: a few files where the real one has them."""
    work = tmp_path_factory.mktemp("base")
    tree = work / "tree"
    (tree / "usr/local/bin").mkdir(parents=True)
    (tree / "usr/local/bin/sealpod").write_text("#!/bin/sh\n")
    os.chmod(tree / "usr/local/bin/sealpod", 0o755)
    (tree / "bundle").mkdir()
    blob, diff_id = write_layer(tree, work)
    layer = work / "layer.tar"
    (work / diff_id.split(":")[1]).rename(layer)
    return RuntimeBase(layer, diff_id, blob.size, "test", built=False)


@pytest.mark.parametrize("fmt", ["oci", "docker"])
def test_archive_reads_back_with_base_and_bundle(
    bundle: Bundle, base: RuntimeBase, tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / "image.tar"
    result = write_image(bundle, base, out, ImageOptions(format=fmt, tag="demo:1"))  # type: ignore[arg-type]
    info = materialize_image(out, tmp_path / "rootfs")
    assert info.format == ("oci-archive" if fmt == "oci" else "docker-archive")
    assert info.diff_ids == result.diff_ids == (base.diff_id, result.diff_ids[1])
    assert info.entrypoint == ct.ENTRYPOINT
    assert info.cmd == ("--signer", bundle.signer_id.hex())
    root = tmp_path / "rootfs"
    assert (root / "usr/local/bin/sealpod").is_file()
    assert (root / "bundle/manifest.json").read_bytes() == (
        bundle.path / "manifest.json"
    ).read_bytes()
    assert (root / "bundle/rootfs/app/bin/hello").is_file()
    if fmt == "docker":
        assert info.repo_tags == ("demo:1",)
    else:
        with tarfile.open(out) as tf:
            index = json.load(tf.extractfile("index.json"))  # type: ignore[arg-type]
        assert index["manifests"][0]["annotations"] == {
            "org.opencontainers.image.ref.name": "demo:1"
        }


def test_same_inputs_same_bytes(bundle: Bundle, base: RuntimeBase, tmp_path: Path) -> None:
    options = ImageOptions(tag="demo:1", kms_url="https://kms.example:8443", kms_identity=KMS_ID)
    first = write_image(bundle, base, tmp_path / "a.tar", options)
    os.utime(bundle.path / "manifest.json", (12345, 12345))  # file times do not matter
    second = write_image(bundle, base, tmp_path / "b.tar", options)
    assert first.manifest_digest == second.manifest_digest
    assert first.image_id == second.image_id
    assert archive_digest(tmp_path / "a.tar") == archive_digest(tmp_path / "b.tar")
    other = write_image(bundle, base, tmp_path / "c.tar", replace(options, tag="demo:2"))
    assert other.manifest_digest == first.manifest_digest  # the tag is in the index only
    assert archive_digest(tmp_path / "c.tar") != archive_digest(tmp_path / "a.tar")


def test_config_carries_identity_and_kms(bundle: Bundle) -> None:
    config = image_config(
        bundle,
        ImageOptions(kms_url="https://kms.example:8443", kms_identity=KMS_ID.upper()),
        ["sha256:" + "0" * 64],
    )
    labels = config["config"]["Labels"]
    assert labels[ct.LABEL_MEASUREMENT] == bundle.measurement.hex()
    assert labels[ct.LABEL_SIGNER] == bundle.signer_id.hex()
    env = config["config"]["Env"]
    assert f"{ct.ENV_KMS_URL}=https://kms.example:8443" in env
    assert f"{ct.ENV_KMS_IDENTITY}={KMS_ID}" in env
    assert f"{ct.ENV_HOME}={ct.SEALPOD_HOME}" in env
    assert config["created"] == "1970-01-01T00:00:00Z"
    bare = image_config(bundle, ImageOptions(), [])["config"]["Env"]
    assert not any(e.startswith("SEALPOD_KMS") for e in bare)  # the demo spec has no [kms]


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (ImageOptions(tag="Demo"), "tag is"),
        (ImageOptions(tag="demo:1 ; rm"), "tag is"),
        (ImageOptions(kms_url="ftp://x"), "KMS URL is"),
        (ImageOptions(kms_identity="xyz"), "KMS identity is"),
    ],
)
def test_refused(
    bundle: Bundle, base: RuntimeBase, tmp_path: Path, options: ImageOptions, words: str
) -> None:
    out = tmp_path / "image.tar"
    with pytest.raises(ConfigError, match=words):
        write_image(bundle, base, out, options)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_refuses_a_directory_as_output(bundle: Bundle, base: RuntimeBase, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        write_image(bundle, base, tmp_path, ImageOptions())


def test_mmdebstrap_command_line(tmp_path: Path) -> None:
    spec = DebianRootfs(packages=("python3", "fuse3"), customize_hooks=('echo "$1"',))
    argv = mmdebstrap_argv(spec, tmp_path / "root")
    assert argv[:5] == ["mmdebstrap", "--quiet", "--variant=essential", "--mode=auto",
                        "--format=directory"]  # fmt: skip
    assert "--include=python3,fuse3" in argv and '--customize-hook=echo "$1"' in argv
    assert argv[-5:-3] == ["bookworm", str(tmp_path / "root")]
    assert any("bookworm-security" in a for a in argv[-3:])  # security updates come in
    for bad in (
        DebianRootfs(packages=("python3; rm -rf /",)),
        DebianRootfs(suite="Bookworm"),
        DebianRootfs(variant="everything"),
        DebianRootfs(mirrors=("deb file:///etc bookworm main",)),
    ):
        with pytest.raises(ConfigError):
            mmdebstrap_argv(bad, tmp_path / "root")


def test_base_alone_is_the_kms_image(base: RuntimeBase, tmp_path: Path) -> None:
    result = write_image(None, base, tmp_path / "sealpod.tar", ImageOptions(tag="sealpod:0.1"))
    info = materialize_image(tmp_path / "sealpod.tar", tmp_path / "rootfs")
    assert info.diff_ids == result.diff_ids == (base.diff_id,)
    assert info.entrypoint == ("sealpod",) and info.cmd == ("--help",)
    assert not (tmp_path / "rootfs" / "bundle" / "manifest.json").exists()
    config = image_config(None, ImageOptions(), [base.diff_id])
    assert ct.LABEL_MEASUREMENT not in config["config"]["Labels"]


def test_leftover_mounts_are_found_deepest_first() -> None:
    from sealpod.rootfs.debian import mounts_under

    info = (
        "22 1 8:1 / / rw - ext4 /dev/vda rw\n"
        "90 22 0:5 / /tmp/b\\040x/rootfs/proc rw - proc proc rw\n"
        "91 90 0:6 / /tmp/b\\040x/rootfs/proc/sys/fs/binfmt_misc rw - binfmt_misc b rw\n"
        "92 22 0:7 / /tmp/b\\040x/rootfs2 rw - tmpfs t rw\n"
        "garbage\n"
    )
    assert mounts_under(info, Path("/tmp/b x/rootfs")) == [
        "/tmp/b x/rootfs/proc/sys/fs/binfmt_misc",
        "/tmp/b x/rootfs/proc",
    ]
    assert mounts_under(info, Path("/elsewhere")) == []
