"""Hostile images: each refusal case of materialize_image is a named test here.

Every archive is built in-test with tarfile/io. A refusal must be an ArchiveError whose message
names the offending member, and nothing may be written outside the output directory.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import socket
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sealpod.build.image import materialize_image
from sealpod.errors import ArchiveError

Member = tuple[tarfile.TarInfo, bytes | None]


# --- builders ----------------------------------------------------------------------------------
def f(name: str, data: bytes = b"x", mode: int = 0o644) -> Member:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode = len(data), mode
    return ti, data


def d(name: str) -> Member:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode = tarfile.DIRTYPE, 0o755
    return ti, None


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> Member:
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname = kind, target
    return ti, None


def special(name: str, kind: bytes) -> Member:
    ti = tarfile.TarInfo(name)
    ti.type, ti.devmajor, ti.devminor = kind, 1, 3
    return ti, None


def layer(members: Sequence[Member], *, compress: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, data in members:
            tf.addfile(ti, None if data is None else io.BytesIO(data))
    raw = buf.getvalue()
    return gzip.compress(raw, mtime=0) if compress else raw


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def uncompressed(blob: bytes) -> bytes:
    return gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob


def config(layers: Sequence[bytes]) -> bytes:
    ids = [sha(uncompressed(b)) for b in layers]
    return json.dumps({"os": "linux", "rootfs": {"type": "layers", "diff_ids": ids}}).encode()


def add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    tf.addfile(ti, io.BytesIO(data))


def docker_tar(
    layers: Sequence[bytes],
    *,
    cfg: bytes | None = None,
    manifest: object = None,
    extra: Callable[[tarfile.TarFile], None] | None = None,
) -> bytes:
    cfg = config(layers) if cfg is None else cfg
    names = [f"l{i}/layer.tar" for i in range(len(layers))]
    if manifest is None:
        manifest = [{"Config": "config.json", "RepoTags": ["t:1"], "Layers": names}]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        add(tf, "config.json", cfg)
        for name, blob in zip(names, layers, strict=True):
            add(tf, name, blob)
        add(tf, "manifest.json", json.dumps(manifest).encode())
        if extra is not None:
            extra(tf)
    return buf.getvalue()


def refuse(
    tmp: Path,
    archive: bytes,
    match: str,
    *,
    max_entries: int = 1_000_000,
    max_total_bytes: int = 64 << 30,
    max_entry_bytes: int = 16 << 30,
) -> ArchiveError:
    src = tmp / "image.tar"
    src.write_bytes(archive)
    with pytest.raises(ArchiveError, match=match) as info:
        materialize_image(
            src,
            tmp / "out",
            max_entries=max_entries,
            max_total_bytes=max_total_bytes,
            max_entry_bytes=max_entry_bytes,
        )
    assert not (tmp / "out").exists(), "a refused image must leave no output behind"
    return info.value


def refuse_layers(tmp: Path, members: Sequence[Member], match: str, **limits: int) -> None:
    refuse(tmp, docker_tar([layer(members)]), match, **limits)


# --- member paths ------------------------------------------------------------------------------
def test_dotdot_member_is_refused(tmp_path: Path) -> None:
    refuse_layers(tmp_path, [f("../evil")], r"member '\.\./evil' has a '\.\.' component")


def test_dotdot_inside_member_path_is_refused(tmp_path: Path) -> None:
    refuse_layers(tmp_path, [f("a/../../evil")], r"'a/\.\./\.\./evil' has a '\.\.' component")


def test_absolute_member_is_refused(tmp_path: Path) -> None:
    refuse_layers(tmp_path, [f("/etc/passwd")], r"'/etc/passwd' is an absolute path")


def test_overlong_member_path_is_refused(tmp_path: Path) -> None:
    refuse_layers(tmp_path, [f("a/" * 300 + "x")], "levels deep")


# --- symlinks ----------------------------------------------------------------------------------
def test_symlink_escaping_root_is_refused(tmp_path: Path) -> None:
    refuse_layers(tmp_path, [link("etc", "../../../etc")], "'etc' resolves to a path outside")


def test_symlink_chain_escaping_root_is_refused(tmp_path: Path) -> None:
    """Each link looks harmless alone; `d/e -> b/..` climbs out only because d/b is the root."""
    members = [d("d"), link("d/b", "/"), link("d/e", "b/..")]
    refuse_layers(tmp_path, members, r"symlink 'd/e' -> 'b/\.\.' is refused")


def test_member_written_through_escaping_symlink_chain_is_refused(tmp_path: Path) -> None:
    members = [d("d"), link("d/b", "/"), link("d/e", "b/.."), f("d/e/pwned")]
    refuse_layers(tmp_path, members, "'d/e/pwned' resolves to a path outside the image root")
    assert not (tmp_path / "pwned").exists()


def test_absolute_symlink_never_redirects_writes_to_the_host(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    src = tmp_path / "img.tar"
    src.write_bytes(docker_tar([layer([link("h", str(victim)), f("h/pwned", b"owned")])]))
    materialize_image(src, tmp_path / "out")
    assert list(victim.iterdir()) == []
    assert (tmp_path / "out" / str(victim).lstrip("/") / "pwned").read_bytes() == b"owned"


def test_later_layer_file_replaces_symlink_instead_of_writing_through(tmp_path: Path) -> None:
    host_file = tmp_path / "host-secret"
    host_file.write_bytes(b"untouched")
    layers = [layer([link("x", str(host_file))]), layer([f("x", b"overwritten")])]
    src = tmp_path / "img.tar"
    src.write_bytes(docker_tar(layers))
    materialize_image(src, tmp_path / "out")
    assert host_file.read_bytes() == b"untouched"
    assert (tmp_path / "out/x").read_bytes() == b"overwritten"
    assert not (tmp_path / "out/x").is_symlink()


def test_symlink_loop_is_refused(tmp_path: Path) -> None:
    refuse_layers(tmp_path, [link("a", "b"), link("b", "a")], "more than 40 symlinks")


# --- hard links --------------------------------------------------------------------------------
def test_hardlink_with_dotdot_target_is_refused(tmp_path: Path) -> None:
    members = [link("h", "../../etc/passwd", tarfile.LNKTYPE)]
    refuse_layers(tmp_path, members, r"hardlink 'h' target '\.\./\.\./etc/passwd' has a '\.\.'")


def test_hardlink_with_absolute_target_is_refused(tmp_path: Path) -> None:
    members = [link("h", "/etc/passwd", tarfile.LNKTYPE)]
    refuse_layers(tmp_path, members, r"hardlink 'h' target '/etc/passwd' is an absolute path")


def test_hardlink_to_missing_target_is_refused(tmp_path: Path) -> None:
    members = [link("h", "nowhere", tarfile.LNKTYPE)]
    refuse_layers(tmp_path, members, r"hardlink 'h' -> 'nowhere': target is missing")


def test_hardlink_through_symlink_to_outside_is_refused(tmp_path: Path) -> None:
    """A link to `s/passwd` where s -> / lands on the image's /passwd, which does not exist."""
    members = [link("s", "/"), link("h", "s/passwd", tarfile.LNKTYPE)]
    refuse_layers(tmp_path, members, "target is missing")


def test_hardlink_relocating_relative_symlink_out_of_root_is_refused(tmp_path: Path) -> None:
    """A hard link to a symlink re-reads its relative target from the new place."""
    members = [d("a"), d("a/b"), link("a/b/l", "../../x"), link("top", "a/b/l", tarfile.LNKTYPE)]
    refuse_layers(tmp_path, members, r"symlink 'top' -> '\.\./\.\./x' is refused")


# --- special files -----------------------------------------------------------------------------
def test_character_device_is_refused(tmp_path: Path) -> None:
    refuse_layers(tmp_path, [special("dev/null", tarfile.CHRTYPE)], "'dev/null' is a character")


def test_block_device_is_refused(tmp_path: Path) -> None:
    refuse_layers(tmp_path, [special("dev/sda", tarfile.BLKTYPE)], "'dev/sda' is a block device")


def test_fifo_is_refused(tmp_path: Path) -> None:
    refuse_layers(tmp_path, [special("run/pipe", tarfile.FIFOTYPE)], "'run/pipe' is a fifo")


def test_rootfs_dir_with_fifo_is_refused(tmp_path: Path) -> None:
    (tmp_path / "rootfs").mkdir()
    os.mkfifo(tmp_path / "rootfs/pipe")
    with pytest.raises(ArchiveError, match="'pipe' is a fifo"):
        materialize_image(tmp_path / "rootfs", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_rootfs_dir_with_socket_is_refused(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "r/sock"))
        with pytest.raises(ArchiveError, match="'sock' is a socket"):
            materialize_image(tmp_path / "r", tmp_path / "out")


def test_rootfs_dir_with_escaping_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "rootfs/etc").mkdir(parents=True)
    (tmp_path / "rootfs/etc/shadow").symlink_to("../../../etc/shadow")
    with pytest.raises(ArchiveError, match="'etc/shadow' resolves to a path outside"):
        materialize_image(tmp_path / "rootfs", tmp_path / "out")


# --- duplicates and contradictions -------------------------------------------------------------
def test_duplicate_entry_in_one_layer_is_refused(tmp_path: Path) -> None:
    refuse_layers(tmp_path, [f("a", b"1"), f("a", b"2")], "'a' appears more than once")


def test_duplicate_entry_spelled_differently_is_refused(tmp_path: Path) -> None:
    refuse_layers(tmp_path, [f("etc/a"), f("./etc//a")], r"'\./etc//a' appears more than once")


def test_duplicate_entry_through_symlink_is_refused(tmp_path: Path) -> None:
    members = [d("usr"), link("lib", "usr"), f("usr/x"), f("lib/x")]
    refuse_layers(tmp_path, members, "'lib/x' appears more than once")


def test_whiteout_of_an_entry_the_same_layer_adds_is_refused(tmp_path: Path) -> None:
    refuse_layers(tmp_path, [f("a"), f(".wh.a", b"")], "removes an entry its own layer adds")


def test_duplicate_outer_member_is_refused(tmp_path: Path) -> None:
    archive = docker_tar([layer([f("a")])], extra=lambda tf: add(tf, "manifest.json", b"[]"))
    refuse(tmp_path, archive, "archive member 'manifest.json' appears twice")


# --- limits ------------------------------------------------------------------------------------
def test_oversized_entry_is_refused(tmp_path: Path) -> None:
    refuse_layers(tmp_path, [f("big", b"x" * 11)], "'big' is 11 bytes", max_entry_bytes=10)


def test_total_size_over_limit_is_refused(tmp_path: Path) -> None:
    members = [f(f"f{i}", b"x" * 50_000) for i in range(3)]
    refuse_layers(tmp_path, members, "larger than the 100000-byte limit", max_total_bytes=100_000)


def test_entry_count_over_limit_is_refused(tmp_path: Path) -> None:
    refuse_layers(tmp_path, [f(f"f{i}") for i in range(10)], "more than 5 entries", max_entries=5)


def test_gzip_bomb_stops_at_total_limit(tmp_path: Path) -> None:
    bomb = layer([f("zeros", bytes(64 << 20))], compress=True)
    assert len(bomb) < 128 << 10  # 64 MiB of zeros squeezed to a few dozen KiB
    refuse(
        tmp_path, docker_tar([bomb]), "larger than the 1048576-byte limit", max_total_bytes=1 << 20
    )


def _huge_header(kind: bytes, size: int) -> bytes:
    """A pax or GNU long-name header claiming ``size`` bytes: tarfile would buffer them all."""
    ti = tarfile.TarInfo("././@Header")
    ti.type, ti.size = kind, size
    return ti.tobuf(tarfile.USTAR_FORMAT) + bytes(size) + bytes(1024)


@pytest.mark.parametrize("kind", [tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME], ids=["pax", "gnu"])
def test_header_bomb_in_layer_is_refused(tmp_path: Path, kind: bytes) -> None:
    bomb = gzip.compress(_huge_header(kind, 16 << 20), mtime=0)
    refuse(tmp_path, docker_tar([bomb], cfg=config([bomb])), "header block is larger than")


def test_header_bomb_in_outer_archive_is_refused(tmp_path: Path) -> None:
    refuse(tmp_path, _huge_header(tarfile.XHDTYPE, 8 << 20), "header block is larger than")


def test_gzip_bomb_outer_archive_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "image.tar.gz"
    src.write_bytes(gzip.compress(bytes(16 << 20)))
    with pytest.raises(ArchiveError, match="decompresses to more than 1048576 bytes"):
        materialize_image(src, tmp_path / "out", max_total_bytes=1 << 20)


# --- digests, blobs and JSON -------------------------------------------------------------------
def test_docker_layer_digest_mismatch_is_refused(tmp_path: Path) -> None:
    good, evil = layer([f("a", b"good")]), layer([f("a", b"evil")])
    archive = docker_tar([evil], cfg=config([good]))
    refuse(tmp_path, archive, "l0/layer.tar.* uncompressed digest is .*, diff_id " + sha(good))


def _oci(tmp: Path, layers: Sequence[bytes], **tamper: object) -> Path:
    cfg = config(layers)
    descs = [
        {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(b), "size": len(b)}
        for b in layers
    ]
    descs = tamper.get("descs", descs)  # type: ignore[assignment]
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha(cfg),
                "size": len(cfg),
            },
            "layers": descs,
        }
    ).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": sha(manifest),
                "size": len(manifest),
            }
        ],
    }
    root = tmp / "layout"
    (root / "blobs/sha256").mkdir(parents=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_bytes(json.dumps(index).encode())
    blobs = {sha(b): b for b in [*layers, cfg, manifest]}
    blobs.update(tamper.get("blobs", {}))  # type: ignore[call-overload]
    for digest, data in blobs.items():
        if data is not None:
            (root / "blobs/sha256" / digest.split(":")[1]).write_bytes(data)
    return root


def test_oci_blob_digest_mismatch_is_refused(tmp_path: Path) -> None:
    good = layer([f("a", b"good")])
    root = _oci(tmp_path, [good], blobs={sha(good): layer([f("a", b"evil")])})
    with pytest.raises(ArchiveError, match=f"has digest .*, expected {sha(good)}"):
        materialize_image(root, tmp_path / "out")


def test_oci_blob_size_mismatch_is_refused(tmp_path: Path) -> None:
    blob = layer([f("a")])
    descs = [
        {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(blob), "size": 9}
    ]
    root = _oci(tmp_path, [blob], descs=descs)
    with pytest.raises(ArchiveError, match="larger than the 9 bytes declared"):
        materialize_image(root, tmp_path / "out")


def test_oci_missing_blob_is_refused(tmp_path: Path) -> None:
    blob = layer([f("a")])
    root = _oci(tmp_path, [blob], blobs={sha(blob): None})
    with pytest.raises(ArchiveError, match=f"blobs/sha256/{sha(blob)[7:]} is missing"):
        materialize_image(root, tmp_path / "out")


def test_docker_manifest_referencing_missing_layer_is_refused(tmp_path: Path) -> None:
    manifest = [{"Config": "config.json", "Layers": ["l0/layer.tar", "gone/layer.tar"]}]
    blob = layer([f("a")])
    archive = docker_tar([blob], cfg=config([blob, blob]), manifest=manifest)
    refuse(tmp_path, archive, "gone/layer.tar is missing from the archive")


def test_oci_blob_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    blob = layer([f("a")])
    root = _oci(tmp_path, [blob], blobs={sha(blob): None})
    (root / "blobs/sha256" / sha(blob)[7:]).symlink_to("/dev/zero")
    with pytest.raises(ArchiveError, match="symlinks are refused"):
        materialize_image(root, tmp_path / "out")


def test_layer_declared_gzip_but_plain_is_refused(tmp_path: Path) -> None:
    blob = layer([f("a")])
    descs = [
        {
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": sha(blob),
            "size": len(blob),
        }
    ]
    with pytest.raises(ArchiveError, match="declared gzip but its data is tar"):
        materialize_image(_oci(tmp_path, [blob], descs=descs), tmp_path / "out")


def test_outer_symlink_escaping_archive_is_refused(tmp_path: Path) -> None:
    manifest = [{"Config": "config.json", "Layers": ["evil/layer.tar"]}]

    def extra(tf: tarfile.TarFile) -> None:
        tf.addfile(link("evil/layer.tar", "../../../etc/passwd")[0])

    archive = docker_tar([], cfg=config([b""]), manifest=manifest, extra=extra)
    refuse(tmp_path, archive, "archive symlink 'evil/layer.tar' escapes the archive")


def test_manifest_layer_path_with_dotdot_is_refused(tmp_path: Path) -> None:
    manifest = [{"Config": "config.json", "Layers": ["../../etc/passwd"]}]
    archive = docker_tar([], cfg=config([b""]), manifest=manifest)
    refuse(tmp_path, archive, r"'\.\./\.\./etc/passwd' has a '\.\.' component")


@pytest.mark.parametrize(
    ("manifest_bytes", "match"),
    [
        (b"{not json", "manifest.json is not a valid docker manifest: .*Invalid JSON"),
        (
            b'[{"Config": 7, "Layers": []}]',
            "manifest.json is not a valid docker manifest: 0.Config",
        ),
        (b'{"Config": "c"}', "manifest.json is not a valid docker manifest"),
    ],
    ids=["syntax", "wrong-type", "wrong-shape"],
)
def test_malformed_manifest_json_is_refused_and_wrapped_once(
    tmp_path: Path, manifest_bytes: bytes, match: str
) -> None:
    def extra(tf: tarfile.TarFile) -> None:
        add(tf, "manifest.json", manifest_bytes)

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        extra(tf)
    err = refuse(tmp_path, buf.getvalue(), match)
    assert isinstance(err.__cause__, ValidationError)


def test_malformed_config_json_is_refused(tmp_path: Path) -> None:
    blob = layer([f("a")])
    cfg = json.dumps({"config": {"Env": "A=1"}, "rootfs": {"diff_ids": [sha(blob)]}}).encode()
    refuse(tmp_path, docker_tar([blob], cfg=cfg), "config.json is not a valid image config")


def test_multiple_images_in_one_archive_are_refused(tmp_path: Path) -> None:
    entry = {"Config": "config.json", "Layers": []}
    refuse(tmp_path, docker_tar([], manifest=[entry, entry]), "lists 2 images, expected exactly 1")


def test_not_an_image_is_refused(tmp_path: Path) -> None:
    refuse(tmp_path, b"hello, world" * 100, "is not a valid tar archive")


# --- property: any input is a valid image or an ArchiveError -----------------------------------
_VALID = docker_tar(
    [
        layer([d("etc"), f("etc/a", b"A" * 40), link("l", "etc/a"), f("b", b"B")]),
        layer([f("etc/.wh.a", b""), f("c", b"C"), link("h", "b", tarfile.LNKTYPE)], compress=True),
    ]
)


def _materialize_or_archive_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "image.tar")
        src.write_bytes(data)
        try:
            materialize_image(
                src,
                Path(tmp, "out"),
                max_entries=200,
                max_total_bytes=4 << 20,
                max_entry_bytes=1 << 20,
            )
        except ArchiveError:
            assert not Path(tmp, "out").exists()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_random_bytes_give_archive_error(data: bytes) -> None:
    _materialize_or_archive_error(data)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8
    ),
    st.one_of(st.none(), st.integers(0, len(_VALID))),
)
def test_mutated_docker_archive_is_valid_or_archive_error(
    flips: list[tuple[int, int]], cut: int | None
) -> None:
    data = bytearray(_VALID)
    for pos, value in flips:
        data[pos] = value
    _materialize_or_archive_error(bytes(data[:cut]))


# Repeats weight the choices: mostly plain names, so runs get past the first refusal.
_COMPONENT = st.sampled_from(["a", "b", "lnk"] * 5 + ["..", ".", "", ".wh.a", ".wh..wh..opq"])
_PATH = st.lists(_COMPONENT, min_size=1, max_size=4).map("/".join)
_TARGET = st.tuples(st.sampled_from(["", "", "/"]), _PATH).map("".join)


@st.composite
def _member(draw: st.DrawFn) -> Member:
    name = draw(_PATH)
    kind = draw(st.sampled_from([*"ffffffdddddlllllhhh", "c", "p"]))
    if kind == "f":
        return f(name, draw(st.binary(max_size=16)))
    if kind == "d":
        return d(name)
    if kind in "lh":
        return link(name, draw(_TARGET), tarfile.SYMTYPE if kind == "l" else tarfile.LNKTYPE)
    return special(name, tarfile.CHRTYPE if kind == "c" else tarfile.FIFOTYPE)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(_member(), max_size=8), min_size=1, max_size=3))
def test_random_layers_stay_inside_the_root(layers: list[list[Member]]) -> None:
    """Layers of random members (with valid digests) give a tree or an ArchiveError, and never
    create anything outside the output directory."""
    with tempfile.TemporaryDirectory() as tmp:
        blobs = [layer(members) for members in layers]
        Path(tmp, "image.tar").write_bytes(docker_tar(blobs))
        try:
            materialize_image(Path(tmp, "image.tar"), Path(tmp, "out"))
        except ArchiveError:
            assert not Path(tmp, "out").exists()
        assert set(os.listdir(tmp)) <= {"image.tar", "out"}
        for dirpath, _, names in os.walk(Path(tmp, "out")):
            for name in names:
                p = Path(dirpath, name)
                if p.is_symlink():
                    target = os.readlink(p)
                    base = Path(tmp, "out") if target.startswith("/") else p.parent
                    resolved = os.path.normpath(base / target.lstrip("/"))
                    assert resolved.startswith(str(Path(tmp, "out"))), (p, target)


def test_unmutated_property_seed_is_valid(tmp_path: Path) -> None:
    """The property's seed must itself be accepted, or the mutations test nothing."""
    src = tmp_path / "seed.tar"
    src.write_bytes(_VALID)
    info = materialize_image(src, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b", "c", "etc", "h", "l"]
    assert info.file_count == 3
