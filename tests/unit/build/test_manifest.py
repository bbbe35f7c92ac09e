"""The manifest: canonical bytes, measurement, fit to the image, parsing refusals, differences."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealpod.build.manifest import (
    AnyEntry,
    DirEntry,
    FileEntry,
    Observed,
    SymlinkEntry,
    compare,
    make_manifest,
    parse_manifest,
    resolve,
)
from sealpod.errors import BundleIntegrityError, SpecError
from sealpod.spec.model import PodSpec, parse_spec

H = hashlib.sha256(b"x").hexdigest()
Z = "0" * 64


PROCESS: dict[str, Any] = {"entrypoint": "/app/run", "env": {"K": "v", "S": {"secret": "s"}}}


def spec(**changes: Any) -> PodSpec:
    doc: dict[str, Any] = {
        "image": {"source": "rootfs"},
        "process": PROCESS,
        "identity": {"product_id": 1, "svn": 2},
        "volumes": [{"path": "/data", "name": "data"}],
        "files": [{"path": "/run/key", "secret": "k"}],
    }
    doc.update(changes)
    return parse_spec(doc)


def tree() -> list[Observed]:
    return [
        Observed(path="/app", kind="dir", mode=0o755),
        Observed(path="/app/run", kind="file", mode=0o755, size=1, sha256=H),
        Observed(path="/app/conf", kind="file", mode=0o644, size=1, sha256=H),
        Observed(path="/app/link", kind="symlink", target="run"),
        Observed(path="/data", kind="dir", mode=0o700),
    ]


def test_manifest_holds_everything_the_design_lists() -> None:
    m = make_manifest(spec(), tree())
    doc = json.loads(m.to_bytes())
    assert set(doc) == {
        "format",
        "identity",
        "process",
        "files",
        "volumes",
        "tee",
        "kms",
        "trusted",
    }
    assert doc["identity"] == {"product_id": 1, "svn": 2}
    assert doc["process"]["env"] == {"K": "v", "S": {"secret": "s"}}
    assert doc["tee"]["memory_bytes"] == 512 << 20
    assert [e["path"] for e in doc["trusted"]["entries"]] == sorted(o.path for o in tree())
    assert doc["trusted"]["entries"][2] == {"path": "/app/link", "type": "symlink", "target": "run"}
    assert "mtime" not in m.to_bytes().decode() and "uid" not in m.to_bytes().decode()


def test_measurement_is_sha256_of_the_canonical_bytes() -> None:
    m = make_manifest(spec(), tree())
    assert m.measurement == hashlib.sha256(m.to_bytes()).digest()
    assert b" " not in m.to_bytes() and b"\n" not in m.to_bytes()


def test_input_order_does_not_matter() -> None:
    assert (
        make_manifest(spec(), tree()).to_bytes() == make_manifest(spec(), tree()[::-1]).to_bytes()
    )


def test_equal_memory_sizes_give_the_same_measurement() -> None:
    a = make_manifest(spec(tee={"memory": "512M"}), tree())
    b = make_manifest(spec(tee={"memory": "524288K"}), tree())
    assert a.measurement == b.measurement


@pytest.mark.parametrize(
    "change",
    [
        {"identity": {"product_id": 1, "svn": 3}},
        {"identity": {"product_id": 2, "svn": 2}},
        {"tee": {"debug": True}},
        {"tee": {"backends": ["sgx"]}},
        {"process": {**PROCESS, "args": ["-v"]}},
        {"process": {**PROCESS, "env": {"K": "w", "S": {"secret": "s"}}}},
        {"volumes": [{"path": "/data", "name": "other"}]},
        {"files": [{"path": "/run/key", "secret": "k", "mode": 0o440}]},
        {"kms": {"url": "https://kms.example"}},
        {"process": {**PROCESS, "env": {"K": "v", "S": {"secret": "t"}}}},
        {"process": {**PROCESS, "workdir": "/app"}},
        {"process": {**PROCESS, "user": "1000"}},
        {"tee": {"memory": "1G"}},
        {"tee": {"threads": 8}},
        {"trusted": {"paths": ["/app", "/data"]}},
        {"files": [{"path": "/run/key", "secret": "other"}]},
        {"volumes": [{"path": "/data", "name": "data", "rollback_window_ms": 100}]},
    ],
    ids=[
        "svn",
        "product",
        "debug",
        "backends",
        "args",
        "env",
        "volume",
        "file-mode",
        "kms",
        "env-secret-name",
        "workdir",
        "user",
        "memory",
        "threads",
        "trusted-paths",
        "file-secret",
        "rollback-window",
    ],
)
def test_every_spec_field_is_measured(change: dict[str, Any]) -> None:
    assert (
        make_manifest(spec(**change), tree()).measurement
        != make_manifest(spec(), tree()).measurement
    )


def test_a_volume_without_a_rollback_window_keeps_its_manifest_bytes() -> None:
    """The field is left out at its default, so manifests signed before it existed still parse
    in canonical form and keep their measurement; a set window is written and round-trips."""
    plain = make_manifest(spec(), tree())
    assert b"rollback_window_ms" not in plain.to_bytes()
    assert parse_manifest(plain.to_bytes()).measurement == plain.measurement
    explicit = spec(volumes=[{"path": "/data", "name": "data", "rollback_window_ms": 0}])
    assert make_manifest(explicit, tree()).measurement == plain.measurement
    windowed = make_manifest(
        spec(volumes=[{"path": "/data", "name": "data", "rollback_window_ms": 250}]), tree()
    )
    assert b'"rollback_window_ms":250' in windowed.to_bytes()
    assert parse_manifest(windowed.to_bytes()).volumes[0].rollback_window_ms == 250


def test_parse_round_trip() -> None:
    m = make_manifest(spec(), tree())
    again = parse_manifest(m.to_bytes())
    assert again == m
    assert again.file_count == 2 and again.total_size == 2


def test_contract_attributes() -> None:
    m = parse_manifest(make_manifest(spec(), tree()).to_bytes())
    assert m.identity.product_id == 1 and m.identity.svn == 2
    assert m.tee.debug is False and m.tee.backends == ["sgx", "snp", "tdx"]
    assert m.volumes[0].name == "data" and m.files[0].secret == "k"
    assert m.process.entrypoint == "/app/run"


def _doc() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(make_manifest(spec(), tree()).to_bytes())
    return result


def _canon(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_pretty_printed_manifest_is_refused() -> None:
    with pytest.raises(BundleIntegrityError, match="not in canonical form"):
        parse_manifest(json.dumps(_doc(), indent=1, sort_keys=True).encode())


def test_manifest_with_omitted_default_is_refused() -> None:
    doc = _doc()
    del doc["process"]["args"]  # valid for the model (default []), but not the signed bytes
    with pytest.raises(BundleIntegrityError, match="not in canonical form"):
        parse_manifest(_canon(doc))


def test_duplicate_keys_are_refused() -> None:
    raw = make_manifest(spec(), tree()).to_bytes()
    raw = raw.replace(b'"kms":null', b'"kms":null,"kms":null')
    with pytest.raises(BundleIntegrityError):
        parse_manifest(raw)


def _mutate(path: list[Any], value: object) -> dict[str, Any]:
    doc = _doc()
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        (["extra"], 1, "extra"),
        (["format"], "sealpod-manifest/v2", "format"),
        (["identity", "svn"], 1.0, "identity.svn"),
        (["trusted", "entries", 1, "sha256"], "XYZ", "sha256"),
        (["trusted", "entries", 1, "type"], "fifo", "trusted.entries[1]"),
        (["trusted", "entries", 1, "path"], "/zzz", "out of order"),
        (["trusted", "entries", 1, "path"], "/app", "out of order"),
        (["trusted", "paths"], ["/app"], "not under a path"),
        (["trusted", "entries", 1, "mode"], 0o10000, "mode"),
        (["trusted", "entries", 1, "size"], -1, "size"),
    ],
    ids=["extra-key", "format", "float", "bad-hash", "bad-type", "unsorted", "duplicate",
         "outside-trusted", "mode-range", "negative-size"],
)  # fmt: skip
def test_malformed_manifest_is_refused(path: list[Any], value: object, fragment: str) -> None:
    with pytest.raises(BundleIntegrityError, match=re.escape(fragment)):
        parse_manifest(_canon(_mutate(path, value)))


def test_oversized_manifest_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sealpod.build.manifest.MAX_MANIFEST_SIZE", 10)
    with pytest.raises(BundleIntegrityError, match="larger than"):
        parse_manifest(make_manifest(spec(), tree()).to_bytes())


# --- the spec must fit its image ------------------------------------------------------------
def test_entrypoint_through_a_directory_symlink() -> None:
    items = [
        Observed(path="/bin", kind="symlink", target="usr/bin"),
        Observed(path="/usr", kind="dir", mode=0o755),
        Observed(path="/usr/bin", kind="dir", mode=0o755),
        Observed(path="/usr/bin/sh", kind="file", mode=0o755, size=1, sha256=H),
    ]
    m = make_manifest(spec(process={"entrypoint": "/bin/sh"}, volumes=[], files=[]), items)
    assert m.process.entrypoint == "/bin/sh"


@pytest.mark.parametrize(
    ("changes", "items", "fragment"),
    [
        ({"process": {"entrypoint": "/app/missing"}}, None, "not a trusted file of the image"),
        ({"process": {"entrypoint": "/app"}}, None, "not a trusted file of the image"),
        ({"process": {"entrypoint": "/app/conf"}}, None, "is not executable (mode 0644)"),
        ({"trusted": {"paths": ["/data"]}}, None, "not a trusted file of the image"),
        ({"trusted": {"paths": ["/", "/opt"]}}, None, "trusted.paths[1]: /opt is not in the image"),
        ({"files": [{"path": "/app/conf", "secret": "k"}]}, None,
         "files[0].path: /app/conf exists"),
        ({"volumes": [{"path": "/app", "name": "v"}]}, None,
         "volumes[0].path: mounting /app would hide"),
        ({"process": {"entrypoint": "/loop"}},
         [Observed(path="/loop", kind="symlink", target="/loop")], "not a trusted file"),
    ],
    ids=["missing", "directory", "not-executable", "untrusted", "trusted-path-absent",
         "secret-file-hides", "volume-hides", "symlink-loop"],
)  # fmt: skip
def test_spec_that_does_not_fit_the_image(
    changes: dict[str, Any], items: list[Observed] | None, fragment: str
) -> None:
    with pytest.raises(SpecError) as info:
        make_manifest(spec(**changes), tree() + (items or []))
    assert fragment in info.value.message


def test_special_file_cannot_enter_a_manifest() -> None:
    fifo = Observed(path="/app/pipe", kind="other", detail="FIFO")
    with pytest.raises(SpecError, match="/app/pipe is a FIFO"):
        make_manifest(spec(), [*tree(), fifo])


def test_resolve() -> None:
    index: dict[str, AnyEntry] = {
        "/a": DirEntry(path="/a", mode=0o755),
        "/a/f": FileEntry(path="/a/f", mode=0o644, size=0, sha256=H),
        "/a/up": SymlinkEntry(path="/a/up", target="../a/f"),
        "/abs": SymlinkEntry(path="/abs", target="/a/up"),
        "/dotdot": SymlinkEntry(path="/dotdot", target="../../../a/f"),  # .. stops at the root
    }
    assert resolve(index, "/abs") == index["/a/f"]
    assert resolve(index, "/dotdot") == index["/a/f"]
    assert resolve(index, "/a/./f") == index["/a/f"]
    assert resolve(index, "/a") == index["/a"]
    assert resolve(index, "/nope") is None
    assert resolve(index, "/") is None


# --- differences ----------------------------------------------------------------------------
def _entries() -> list[AnyEntry]:
    return list(make_manifest(spec(), tree()).trusted.entries)


def _observed(**changes: Observed | None) -> list[Observed]:
    by_path = {o.path: o for o in tree()}
    for path, item in changes.items():
        path = "/" + path.replace("__", "/")
        if item is None:
            del by_path[path]
        else:
            by_path[path] = item
    return list(by_path.values())


def test_identical_tree_has_no_differences() -> None:
    assert compare(_entries(), tree()) == []


@pytest.mark.parametrize(
    ("changes", "kind", "path"),
    [
        ({"app__conf": Observed(path="/app/conf", kind="file", mode=0o644, size=1, sha256=Z)},
         "modified", "/app/conf"),
        ({"app__conf": Observed(path="/app/conf", kind="file", mode=0o644, size=2, sha256=H)},
         "modified", "/app/conf"),
        ({"app__conf": None}, "missing", "/app/conf"),
        ({"app__new": Observed(path="/app/new", kind="file", mode=0o644, size=0, sha256=H)},
         "extra", "/app/new"),
        ({"app__conf": Observed(path="/app/conf", kind="file", mode=0o666, size=1, sha256=H)},
         "mode-changed", "/app/conf"),
        ({"data": Observed(path="/data", kind="dir", mode=0o777)}, "mode-changed", "/data"),
        ({"app__link": Observed(path="/app/link", kind="symlink", target="/etc/shadow")},
         "symlink-retargeted", "/app/link"),
        ({"app__link": Observed(path="/app/link", kind="file", mode=0o755, size=1, sha256=H)},
         "type-changed", "/app/link"),
        ({"app__conf": Observed(path="/app/conf", kind="other", detail="FIFO")},
         "type-changed", "/app/conf"),
    ],
    ids=["content", "size", "missing", "extra", "file-mode", "dir-mode", "retargeted",
         "symlink-to-file", "file-to-fifo"],
)  # fmt: skip
def test_each_difference(changes: dict[str, Observed | None], kind: str, path: str) -> None:
    diffs = compare(_entries(), _observed(**changes))
    assert [(d.kind, d.path) for d in diffs] == [(kind, path)]


def test_every_difference_is_reported() -> None:
    observed = _observed(
        app__conf=Observed(path="/app/conf", kind="file", mode=0o600, size=1, sha256="0" * 64),
        app__run=None,
        app__link=Observed(path="/app/link", kind="symlink", target="conf"),
        zz=Observed(path="/zz", kind="dir", mode=0o755),
    )
    kinds = [(d.kind, d.path) for d in compare(_entries(), observed)]
    assert kinds == [
        ("modified", "/app/conf"),
        ("mode-changed", "/app/conf"),
        ("symlink-retargeted", "/app/link"),
        ("missing", "/app/run"),
        ("extra", "/zz"),
    ]


def test_difference_text_and_dict() -> None:
    (diff,) = compare(_entries(), _observed(data=Observed(path="/data", kind="dir", mode=0o777)))
    assert str(diff) == "mode-changed: /data (expected 0700, found 0777)"
    assert diff.to_dict() == {
        "kind": "mode-changed", "path": "/data", "expected": "0700", "actual": "0777"
    }  # fmt: skip


def test_undecodable_names_are_printable() -> None:
    odd = Observed(path="/app/\udcff", kind="file", mode=0o644, size=0, sha256=H)
    (diff,) = compare(_entries(), [*tree(), odd])
    assert diff.path == "/app/\\xff"
    diff.path.encode("utf-8")


# --- the property: any change to any file changes the measurement --------------------------
@given(
    st.lists(st.binary(max_size=64), min_size=1, max_size=6),
    st.data(),
)
def test_any_file_change_changes_the_measurement(
    contents: list[bytes], data: st.DataObject
) -> None:
    def items(blobs: list[bytes], modes: list[int]) -> list[Observed]:
        files = [
            Observed(path=f"/app/f{i}", kind="file", mode=m, size=len(b),
                     sha256=hashlib.sha256(b).hexdigest())
            for i, (b, m) in enumerate(zip(blobs, modes, strict=True))
        ]  # fmt: skip
        entry = Observed(path="/app/run", kind="file", mode=0o755, size=0, sha256=H)
        return [Observed(path="/app", kind="dir", mode=0o755), entry, *files]

    modes = [0o644] * len(contents)
    the_spec = spec(volumes=[], files=[])
    base = make_manifest(the_spec, items(contents, modes)).measurement
    i = data.draw(st.integers(0, len(contents) - 1))
    if data.draw(st.booleans()):
        changed = list(contents)
        changed[i] = data.draw(st.binary(max_size=64).filter(lambda b: b != contents[i]))
        assert make_manifest(the_spec, items(changed, modes)).measurement != base
    else:
        new_modes = list(modes)
        new_modes[i] = data.draw(st.integers(0, 0o7777).filter(lambda m: m != 0o644))
        assert make_manifest(the_spec, items(contents, new_modes)).measurement != base


# --- hostile input: a typed error or a faithful round trip, nothing else --------------------
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_escape_as_foreign_errors(raw: bytes) -> None:
    try:
        manifest = parse_manifest(raw)
    except BundleIntegrityError:
        return
    assert manifest.to_bytes() == raw


@given(st.data())
def test_byte_flips_are_refused_or_round_trip(data: st.DataObject) -> None:
    raw = bytearray(make_manifest(spec(), tree()).to_bytes())
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    try:
        manifest = parse_manifest(bytes(raw))
    except BundleIntegrityError:
        return
    # a flip that still parses (e.g. inside a hash or a name) is a different manifest
    assert manifest.to_bytes() == bytes(raw)
    assert manifest.measurement != make_manifest(spec(), tree()).measurement
