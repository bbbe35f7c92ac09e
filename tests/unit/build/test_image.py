"""materialize_image: rootfs dirs, docker-save archives and OCI layouts give the expected tree."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from sealpod.build.image import materialize_image
from sealpod.errors import ArchiveError, ConfigError
from sealpod.testing.trees import snapshot_tree as tree


# --- builders: tiny images made in-test --------------------------------------------------------
@dataclass(frozen=True)
class E:
    """A layer entry: kind f(ile) d(ir) l(symlink) h(ardlink); data for files, target for links."""

    name: str
    kind: str = "f"
    data: bytes = b""
    target: str = ""
    mode: int = 0o644


def layer(entries: Sequence[E], *, compress: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            ti = tarfile.TarInfo(e.name)
            ti.mode = e.mode
            if e.kind == "f":
                ti.size = len(e.data)
                tf.addfile(ti, io.BytesIO(e.data))
                continue
            ti.type = {"d": tarfile.DIRTYPE, "l": tarfile.SYMTYPE, "h": tarfile.LNKTYPE}[e.kind]
            ti.linkname = e.target
            tf.addfile(ti)
    raw = buf.getvalue()
    return gzip.compress(raw, mtime=0) if compress else raw


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def diff_id(blob: bytes) -> str:
    return sha(gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob)


def config_json(layers: Sequence[bytes], **process: object) -> bytes:
    cfg = {
        "architecture": "amd64",
        "os": "linux",
        "config": process,
        "rootfs": {"type": "layers", "diff_ids": [diff_id(b) for b in layers]},
    }
    return json.dumps(cfg).encode()


def add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    tf.addfile(ti, io.BytesIO(data))


def docker_archive(path: Path, layers: Sequence[bytes], **process: object) -> Path:
    """A `docker save` archive (legacy layout: <hex>.json config, <id>/layer.tar layers)."""
    cfg = config_json(layers, **process)
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    names = [f"{i:064x}/layer.tar" for i in range(len(layers))]
    manifest = [{"Config": cfg_name, "RepoTags": ["demo:1"], "Layers": names}]
    with tarfile.open(path, "w") as tf:
        add_bytes(tf, cfg_name, cfg)
        for name, blob in zip(names, layers, strict=True):
            add_bytes(tf, name, blob)
        add_bytes(tf, "manifest.json", json.dumps(manifest).encode())
    return path


def oci_blobs(layers: Sequence[bytes], **process: object) -> tuple[dict[str, bytes], bytes]:
    """Blobs of a one-image OCI layout and the manifest's bytes."""
    cfg = config_json(layers, **process)
    descs = [
        {
            "mediaType": "application/vnd.oci.image.layer.v1.tar"
            + ("+gzip" if b[:2] == b"\x1f\x8b" else ""),
            "digest": sha(b),
            "size": len(b),
        }
        for b in layers
    ]
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha(cfg),
                "size": len(cfg),
            },
            "layers": descs,
        }
    ).encode()
    blobs = {sha(b): b for b in [*layers, cfg, manifest]}
    return blobs, manifest


def index_json(manifests: Sequence[tuple[bytes, str | None, str]]) -> bytes:
    entries = []
    for data, plat, media in manifests:
        d: dict[str, object] = {"mediaType": media, "digest": sha(data), "size": len(data)}
        if plat:
            os_, arch = plat.split("/")
            d["platform"] = {"os": os_, "architecture": arch}
        entries.append(d)
    return json.dumps({"schemaVersion": 2, "manifests": entries}).encode()


MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"


def oci_layout(root: Path, blobs: dict[str, bytes], index: bytes, *, as_tar: bool = False) -> Path:
    files = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', "index.json": index}
    for digest, data in blobs.items():
        files["blobs/sha256/" + digest.split(":")[1]] = data
    if as_tar:
        path = root.with_suffix(".tar")
        with tarfile.open(path, "w") as tf:
            for name, data in sorted(files.items()):
                add_bytes(tf, name, data)
        return path
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


# --- the three-layer image with whiteouts and an opaque directory ------------------------------
THREE_LAYERS = [
    [
        E("etc", "d", mode=0o755),
        E("etc/hostname", data=b"base"),
        E("etc/passwd", data=b"root:x:0:0"),
        E("var", "d", mode=0o755),
        E("var/cache", "d", mode=0o755),
        E("var/cache/old", data=b"stale"),
        E("var/cache/sub", "d", mode=0o755),
        E("var/cache/sub/deep", data=b"stale too"),
        E("usr", "d", mode=0o755),
        E("usr/lib", "d", mode=0o755),
        E("lib", "l", target="usr/lib"),
        E("bin", "d", mode=0o755),
        E("bin/sh", data=b"#!sh", mode=0o755),
        E("bin/old-sh", "h", target="bin/sh"),
    ],
    [
        E("etc/.wh.hostname"),  # delete a lower file
        E("var/cache", "d", mode=0o750),
        E("var/cache/.wh..wh..opq"),  # hide all of var/cache from layer 1
        E("var/cache/new", data=b"fresh"),
        E("lib/libc.so", data=b"ELF"),  # written through the lib -> usr/lib symlink
    ],
    [
        E("etc/hostname", data=b"again"),  # re-created after the whiteout below it
        E("bin/.wh.old-sh"),
        E("bin/sh", data=b"#!new-sh", mode=0o4755),  # setuid is dropped on purpose
        E("srv", "d", mode=0o555),  # read-only dir that still receives a child below
        E("srv/data", data=b"d", mode=0o400),
    ],
]
EXPECTED_TREE: dict[str, object] = {
    "etc": 0o755,
    "etc/hostname": (b"again", 0o644),
    "etc/passwd": (b"root:x:0:0", 0o644),
    "var": 0o755,
    "var/cache": 0o750,
    "var/cache/new": (b"fresh", 0o644),
    "usr": 0o755,
    "usr/lib": 0o755,
    "usr/lib/libc.so": (b"ELF", 0o644),
    "lib": "-> usr/lib",
    "bin": 0o755,
    "bin/sh": (b"#!new-sh", 0o755),
    "srv": 0o555,
    "srv/data": (b"d", 0o400),
}


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_docker_save_three_layers_with_whiteouts(tmp_path: Path, compress: bool) -> None:
    blobs = [layer(entries, compress=compress) for entries in THREE_LAYERS]
    src = docker_archive(
        tmp_path / "img.tar", blobs, Entrypoint=["/bin/sh"], Cmd=["-c", "true"], Env=["A=1"]
    )
    info = materialize_image(src, tmp_path / "out")
    assert tree(tmp_path / "out") == EXPECTED_TREE
    assert info.format == "docker-archive"
    assert info.repo_tags == ("demo:1",)
    assert info.layer_digests == tuple(sha(b) for b in blobs)
    assert info.diff_ids == tuple(diff_id(b) for b in blobs)
    assert (info.entrypoint, info.cmd, info.env) == (("/bin/sh",), ("-c", "true"), ("A=1",))
    assert info.platform == "linux/amd64"
    assert (info.file_count, info.total_bytes) == (6, 5 + 10 + 5 + 3 + 8 + 1)


def test_gzip_compressed_docker_archive(tmp_path: Path) -> None:
    src = docker_archive(tmp_path / "img.tar", [layer(e) for e in THREE_LAYERS])
    gz = tmp_path / "img.tar.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    materialize_image(gz, tmp_path / "out")
    assert tree(tmp_path / "out") == EXPECTED_TREE


@pytest.mark.parametrize("as_tar", [False, True], ids=["dir", "tar"])
def test_oci_layout_round_trip(tmp_path: Path, as_tar: bool) -> None:
    layers = [layer(e, compress=i == 1) for i, e in enumerate(THREE_LAYERS)]
    blobs, manifest = oci_blobs(layers, WorkingDir="/srv", User="1000:1000")
    src = oci_layout(
        tmp_path / "layout", blobs, index_json([(manifest, None, MANIFEST_TYPE)]), as_tar=as_tar
    )
    info = materialize_image(src, tmp_path / "out")
    assert tree(tmp_path / "out") == EXPECTED_TREE
    assert info.format == ("oci-archive" if as_tar else "oci-layout")
    assert info.layer_digests == tuple(sha(b) for b in layers)
    assert (info.working_dir, info.user, info.entrypoint) == ("/srv", "1000:1000", None)


def test_oci_index_selects_linux_amd64(tmp_path: Path) -> None:
    arm_blobs, arm = oci_blobs([layer([E("arch", data=b"arm64")])])
    amd_blobs, amd = oci_blobs([layer([E("arch", data=b"amd64")])])
    nested = index_json([(arm, "linux/arm64", MANIFEST_TYPE), (amd, "linux/amd64", MANIFEST_TYPE)])
    blobs = {**arm_blobs, **amd_blobs, sha(nested): nested}
    src = oci_layout(tmp_path / "layout", blobs, index_json([(nested, None, INDEX_TYPE)]))
    materialize_image(src, tmp_path / "out")
    assert (tmp_path / "out/arch").read_bytes() == b"amd64"
    materialize_image(src, tmp_path / "out-arm", platform="linux/arm64")
    assert (tmp_path / "out-arm/arch").read_bytes() == b"arm64"
    with pytest.raises(ArchiveError, match="no manifest for linux/s390x"):
        materialize_image(src, tmp_path / "out-s390x", platform="linux/s390x")


def test_docker_25_blob_layout_and_symlinked_layer(tmp_path: Path) -> None:
    """docker >= 25 names layers blobs/sha256/<hex>; old docker links identical layer.tar files."""
    blob = layer([E("a", data=b"1")])
    cfg = config_json([blob, blob])
    path = tmp_path / "img.tar"
    manifest = [
        {
            "Config": "blobs/sha256/" + hashlib.sha256(cfg).hexdigest(),
            "Layers": ["blobs/sha256/" + hashlib.sha256(blob).hexdigest(), "second/layer.tar"],
        }
    ]
    with tarfile.open(path, "w") as tf:
        add_bytes(tf, "blobs/sha256/" + hashlib.sha256(cfg).hexdigest(), cfg)
        add_bytes(tf, "blobs/sha256/" + hashlib.sha256(blob).hexdigest(), blob)
        link = tarfile.TarInfo("second/layer.tar")
        link.type = tarfile.SYMTYPE
        link.linkname = "../blobs/sha256/" + hashlib.sha256(blob).hexdigest()
        tf.addfile(link)
        add_bytes(tf, "manifest.json", json.dumps(manifest).encode())
    info = materialize_image(path, tmp_path / "out")
    assert tree(tmp_path / "out") == {"a": (b"1", 0o644)}
    assert info.repo_tags == ()


def test_replacing_dir_with_file_and_file_with_dir(tmp_path: Path) -> None:
    blobs = [
        layer([E("x", "d", mode=0o755), E("x/inner", data=b"i"), E("y", data=b"file")]),
        layer([E("x", data=b"now a file"), E("y", "d", mode=0o700), E("y/z", data=b"z")]),
    ]
    materialize_image(docker_archive(tmp_path / "i.tar", blobs), tmp_path / "out")
    assert tree(tmp_path / "out") == {
        "x": (b"now a file", 0o644),
        "y": 0o700,
        "y/z": (b"z", 0o644),
    }


def test_opaque_marker_keeps_same_layer_entries_in_any_order(tmp_path: Path) -> None:
    blobs = [
        layer([E("d", "d", mode=0o755), E("d/sub", "d", mode=0o755), E("d/sub/old", data=b"o")]),
        # The new file comes *before* the marker, inside a directory only implied by its path.
        layer([E("d/sub/new", data=b"n"), E("d/.wh..wh..opq")]),
    ]
    materialize_image(docker_archive(tmp_path / "i.tar", blobs), tmp_path / "out")
    assert tree(tmp_path / "out") == {"d": 0o755, "d/sub": 0o755, "d/sub/new": (b"n", 0o644)}


def test_absolute_symlinks_are_kept_and_resolve_inside_the_root(tmp_path: Path) -> None:
    blobs = [
        layer(
            [
                E("usr/bin/python3", data=b"py", mode=0o755),
                E("usr/bin/python", "l", target="/usr/bin/python3"),
                E("etc", "l", target="/"),  # absolute -> image root, not the host's /
                E("etc/motd", data=b"hi"),  # so this lands at the image root
            ]
        )
    ]
    materialize_image(docker_archive(tmp_path / "i.tar", blobs), tmp_path / "out")
    out = tree(tmp_path / "out")
    assert out["usr/bin/python"] == "-> /usr/bin/python3"
    assert out["motd"] == (b"hi", 0o644)


def test_layer_semantics_that_tarfiles_data_filter_would_break(tmp_path: Path) -> None:
    """Why layers are not extracted with tarfile's ``filter="data"`` (docs/architecture.md):
    it refuses absolute symlinks, clears the sticky and group/other write bits (a 0o755
    /tmp), and writes a later layer's file through a lower layer's symlink."""
    blobs = [
        layer(
            [
                E("tmp", "d", mode=0o1777),
                E("etc/localtime", "l", target="/usr/share/zoneinfo/UTC"),
                E("real", data=b"lower"),
                E("alias", "l", target="real"),
            ]
        ),
        layer([E("alias", data=b"upper")]),
    ]
    materialize_image(docker_archive(tmp_path / "i.tar", blobs), tmp_path / "out")
    out = tree(tmp_path / "out")
    assert out["tmp"] == 0o1777
    assert out["etc/localtime"] == "-> /usr/share/zoneinfo/UTC"
    assert (out["real"], out["alias"]) == ((b"lower", 0o644), (b"upper", 0o644))


def test_tarfile_data_filter_still_does_not_fit_image_layers(tmp_path: Path) -> None:
    """A canary: when a Python release changes these, revisit the hand-written TreeWriter."""
    link = tarfile.TarInfo("etc/localtime")
    link.type, link.linkname = tarfile.SYMTYPE, "/usr/share/zoneinfo/UTC"
    with pytest.raises(tarfile.AbsoluteLinkError):
        tarfile.data_filter(link, str(tmp_path))
    tmp = tarfile.TarInfo("tmp")
    tmp.type, tmp.mode = tarfile.DIRTYPE, 0o1777
    filtered = tarfile.data_filter(tmp, str(tmp_path))
    assert filtered is not None
    assert filtered.mode in (None, 0o755)  # None: not applied, the umask decides (0o755 here)


def test_rootfs_directory_is_copied(tmp_path: Path) -> None:
    src = tmp_path / "rootfs"
    (src / "bin").mkdir(parents=True)
    (src / "bin/app").write_bytes(b"app")
    (src / "bin/app").chmod(0o755)
    (src / "empty").mkdir(mode=0o700)
    (src / "empty").chmod(0o700)
    (src / "link").symlink_to("bin/app")
    (src / "abs").symlink_to("/bin/app")
    os.link(src / "bin/app", src / "hard")
    info = materialize_image(src, tmp_path / "out")
    assert tree(tmp_path / "out") == {
        "bin": 0o755,
        "bin/app": (b"app", 0o755),
        "empty": 0o700,
        "link": "-> bin/app",
        "abs": "-> /bin/app",
        "hard": (b"app", 0o755),
    }
    assert (info.format, info.file_count, info.total_bytes, info.layer_digests) == (
        "rootfs-dir",
        2,
        6,
        (),
    )


def test_dest_must_be_empty_and_outside_source(tmp_path: Path) -> None:
    src = tmp_path / "rootfs"
    src.mkdir()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy/x").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        materialize_image(src, tmp_path / "busy")
    with pytest.raises(ConfigError, match="inside the image source"):
        materialize_image(src, src / "out")
    with pytest.raises(ConfigError, match="cannot be read"):
        materialize_image(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    materialize_image(src, tmp_path / "empty")  # an existing empty directory is fine


def test_failure_removes_partial_output(tmp_path: Path) -> None:
    good = layer([E("a", data=b"a")])
    bad = layer([E("b", data=b"b"), E("../evil", data=b"x")])
    src = docker_archive(tmp_path / "i.tar", [good, bad])
    with pytest.raises(ArchiveError):
        materialize_image(src, tmp_path / "new")
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(ArchiveError):
        materialize_image(src, tmp_path / "kept")
    assert list((tmp_path / "kept").iterdir()) == []


def test_zstd_layer_is_refused_without_zstandard(tmp_path: Path) -> None:
    if importlib.util.find_spec("zstandard") is not None:
        pytest.skip("zstandard is installed here, so zstd layers are accepted")
    fake = b"\x28\xb5\x2f\xfd" + b"\0" * 60
    blobs, manifest = oci_blobs([fake])
    text = manifest.decode().replace("v1.tar", "v1.tar+zstd")
    blobs = {k: v for k, v in blobs.items() if v != manifest}
    blobs[sha(text.encode())] = text.encode()
    src = oci_layout(tmp_path / "layout", blobs, index_json([(text.encode(), None, MANIFEST_TYPE)]))
    with pytest.raises(ArchiveError, match="zstd-compressed; install the optional 'zstandard'"):
        materialize_image(src, tmp_path / "out")


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed (optional)")
def test_interop_with_skopeo_copy(tmp_path: Path) -> None:
    """Let the real tool re-write our OCI layout, then read its output back."""
    blobs, manifest = oci_blobs([layer(e) for e in THREE_LAYERS])
    src = oci_layout(tmp_path / "src", blobs, index_json([(manifest, None, MANIFEST_TYPE)]))
    copied = tmp_path / "copy"
    subprocess.run(
        ["skopeo", "copy", f"oci:{src}", f"oci:{copied}:latest"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    materialize_image(copied, tmp_path / "out")
    assert tree(tmp_path / "out") == EXPECTED_TREE
