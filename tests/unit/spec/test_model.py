"""PodSpec: a good spec, and a named refusal for every bad key, type and cross-section conflict."""

from __future__ import annotations

import copy
from typing import Any

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealpod.errors import SpecError
from sealpod.spec.model import PodSpec, SecretRef, allowed_keys, format_loc, parse_spec


def good() -> dict[str, Any]:
    return {
        "image": {"source": "rootfs"},
        "process": {
            "entrypoint": "/app/run",
            "args": ["--port", "8080"],
            "workdir": "/app",
            "user": "1000:1000",
            "env": {"MODE": "prod", "DB_PASSWORD": {"secret": "db-password"}},
        },
        "files": [{"path": "/run/secrets/key", "secret": "tls.key", "mode": 0o440}],
        "trusted": {"paths": ["/app", "/etc"]},
        "volumes": [{"path": "/data", "name": "data"}],
        "tee": {"backends": ["sgx", "sim"], "memory": "2G", "threads": 8, "debug": False},
        "identity": {"product_id": 7, "svn": 3},
        "kms": {"url": "https://kms.example:8443", "identity": "AB" * 32},
    }


def test_good_spec_parses() -> None:
    spec = parse_spec(good())
    assert spec.process.env["DB_PASSWORD"] == SecretRef(secret="db-password")
    assert spec.process.env["MODE"] == "prod"
    assert spec.files[0].mode == 0o440
    assert spec.tee.memory_bytes == 2 * 2**30
    assert spec.kms is not None and spec.kms.identity == "ab" * 32  # normalized to lowercase


def test_minimal_spec_gets_fail_closed_defaults() -> None:
    spec = parse_spec(
        {
            "image": {"source": "r"},
            "process": {"entrypoint": "/x"},
            "identity": {"product_id": 0, "svn": 0},
        }
    )
    assert spec.trusted.paths == ["/"]
    assert spec.tee.debug is False
    assert "sim" not in spec.tee.backends
    assert spec.kms is None and spec.files == [] and spec.volumes == []


def test_model_is_frozen() -> None:
    spec = parse_spec(good())
    with pytest.raises(pydantic.ValidationError):
        spec.identity.svn = 9  # type: ignore[misc]


def _set(doc: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node: Any = doc
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return doc


_DELETE = object()

BAD = [
    # (id, dotted path to change, new value, expected fragment of the message)
    ("env-int", "process.env.DB_PASSWORD", 5,
     "process.env.DB_PASSWORD: expected a string or {secret = NAME}"),
    ("env-table-extra", "process.env.DB_PASSWORD", {"secret": "x", "y": 1},
     "process.env.DB_PASSWORD: expected a string or {secret = NAME}"),
    ("env-secret-not-str", "process.env.DB_PASSWORD", {"secret": 1},
     "process.env.DB_PASSWORD: expected a string or {secret = NAME}"),
    ("env-bad-secret-name", "process.env.DB_PASSWORD", {"secret": "a b"},
     "process.env.DB_PASSWORD: name 'a b' is invalid"),
    ("env-bad-name", "process.env", {"1X": "v"}, "process.env.1X (key): variable name '1X'"),
    ("env-nul", "process.env.MODE", "a\x00b", "process.env.MODE: expected a string without NUL"),
    ("env-not-table", "process.env", ["A=1"], "process.env: expected a table, got an array"),
    ("entrypoint-relative", "process.entrypoint", "app/run",
     "process.entrypoint: expected an absolute path"),
    ("entrypoint-dotdot", "process.entrypoint", "/app/../etc/passwd",
     "process.entrypoint: path '/app/../etc/passwd' is not normalized"),
    ("entrypoint-double-slash", "process.entrypoint", "//app", "expected an absolute path"),
    ("entrypoint-trailing-slash", "process.entrypoint", "/app/", "is not normalized"),
    ("entrypoint-missing", "process.entrypoint", _DELETE,
     "process.entrypoint: required key is missing"),
    ("entrypoint-int", "process.entrypoint", 1, "process.entrypoint: expected a string"),
    ("args-not-list", "process.args", "--port 8080", "process.args: expected an array"),
    ("args-item-int", "process.args", ["--port", 8080], "process.args[1]: expected a string"),
    ("workdir-relative", "process.workdir", ".", "process.workdir: expected an absolute path"),
    ("user-bad", "process.user", "root user", "process.user: user 'root user' is invalid"),
    ("user-int", "process.user", 1000, "process.user: expected a string, got an integer"),
    ("image-missing", "image", _DELETE, "image: required key is missing"),
    ("image-str", "image", "rootfs", "image: expected a table, got a string"),
    ("image-empty", "image.source", "", "image.source"),
    ("file-mode-str", "files.0.mode", "0400", "files[0].mode: expected an integer, got a string"),
    ("file-mode-setuid", "files.0.mode", 0o4755, "files[0].mode: expected a value <= 0o777"),
    ("file-mode-negative", "files.0.mode", -1, "files[0].mode: expected a value >= 0"),
    ("file-secret-missing", "files.0.secret", _DELETE, "files[0].secret: required key is missing"),
    ("file-path-relative", "files.0.path", "key", "files[0].path: expected an absolute path"),
    ("files-table", "files", {"path": "/k"}, "files: expected an array, got a table"),
    ("trusted-empty", "trusted.paths", [], "trusted.paths: expected at least 1 item"),
    ("trusted-str", "trusted.paths", "/", "trusted.paths: expected an array"),
    ("trusted-dup", "trusted.paths", ["/app", "/app"], "trusted.paths[1]: '/app' appears more"),
    ("volume-name-bad", "volumes.0.name", "-x", "volumes[0].name: name '-x' is invalid"),
    ("volume-at-root", "volumes.0.path", "/", "volumes[0].path: a volume cannot be mounted at /"),
    ("tee-backend-unknown", "tee.backends", ["sgx", "sev"],
     "tee.backends[1]: expected one of 'sgx', 'snp', 'tdx' or 'sim', got a string ('sev')"),
    ("tee-backend-dup", "tee.backends", ["sgx", "sgx"], "tee.backends: a backend is listed"),
    ("tee-backends-empty", "tee.backends", [], "tee.backends: expected at least 1 item"),
    ("tee-memory-int", "tee.memory", 512, "tee.memory: expected a string, got an integer"),
    ("tee-memory-unit", "tee.memory", "512MB", "tee.memory: size '512MB' is invalid"),
    ("tee-memory-zero", "tee.memory", "0M", "tee.memory: size '0M' is invalid"),
    ("tee-threads-zero", "tee.threads", 0, "tee.threads: expected a value >= 1"),
    ("tee-threads-float", "tee.threads", 4.0, "tee.threads: expected an integer, got a float"),
    ("tee-debug-str", "tee.debug", "false", "tee.debug: expected true or false, got a string"),
    ("tee-debug-int", "tee.debug", 0, "tee.debug: expected true or false, got an integer"),
    ("identity-missing", "identity", _DELETE, "identity: required key is missing"),
    ("product-id-too-big", "identity.product_id", 65536, "expected a value <= 65535"),
    ("svn-bool", "identity.svn", True, "identity.svn: expected an integer, got a boolean"),
    ("svn-negative", "identity.svn", -1, "identity.svn: expected a value >= 0"),
    ("kms-url-scheme", "kms.url", "ftp://kms", "kms.url: expected an http:// or https:// URL"),
    ("kms-identity-short", "kms.identity", "abcd", "kms.identity: expected 64 hex digits"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "value", "fragment"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_value_is_refused_with_its_key_path(path: str, value: object, fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(_set(good(), path, value))
    assert fragment in info.value.message
    assert info.value.exit_code == 3


UNKNOWN = [
    ("top", "", "imgae", "imgae: unknown key (did you mean 'image'?)"),
    ("process", "process", "entrypiont", "(did you mean 'entrypoint'?)"),
    ("files-item", "files.0", "owner", "files[0].owner: unknown key"),
    ("tee", "tee", "sgx_debug", "tee.sgx_debug: unknown key"),
    ("identity", "identity", "isv_svn", "identity.isv_svn: unknown key"),
    ("kms", "kms", "token", "kms.token: unknown key"),
    ("volume", "volumes.0", "size", "volumes[0].size: unknown key"),
    ("trusted", "trusted", "exclude", "trusted.exclude: unknown key (expected one of: paths)"),
    ("image", "image", "rootfs", "image.rootfs: unknown key"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("table", "key", "fragment"), [u[1:] for u in UNKNOWN], ids=[u[0] for u in UNKNOWN]
)
def test_unknown_key_is_refused(table: str, key: str, fragment: str) -> None:
    doc = good()
    node: Any = doc
    for part in filter(None, table.split(".")):
        node = node[int(part)] if part.isdigit() else node[part]
    node[key] = 1
    with pytest.raises(SpecError) as info:
        parse_spec(doc)
    assert fragment in info.value.message


def test_every_error_is_reported_not_only_the_first() -> None:
    doc = _set(_set(good(), "identity.svn", "x"), "tee.threads", "y")
    with pytest.raises(SpecError) as info:
        parse_spec(doc)
    assert "identity.svn" in info.value.message and "tee.threads" in info.value.message


def test_duplicate_volume_names_and_paths() -> None:
    doc = _set(good(), "volumes", [{"path": "/data", "name": "d"}, {"path": "/data", "name": "d"}])
    with pytest.raises(SpecError) as info:
        parse_spec(doc)
    assert "volumes[1].path: '/data' appears more than once" in info.value.message
    assert "volumes[1].name: 'd' appears more than once" in info.value.message


@pytest.mark.parametrize("window", [-1, 60_001, 1.5, "100", True])
def test_a_rollback_window_out_of_range_or_not_an_integer_is_refused(window: object) -> None:
    doc = _set(good(), "volumes", [{"path": "/data", "name": "d", "rollback_window_ms": window}])
    with pytest.raises(SpecError, match=r"volumes\[0\]\.rollback_window_ms"):
        parse_spec(doc)


def test_nested_volumes_are_refused() -> None:
    doc = _set(
        good(), "volumes", [{"path": "/data", "name": "a"}, {"path": "/data/x", "name": "b"}]
    )
    with pytest.raises(SpecError, match=r"volumes\[1\].path: /data/x is inside volume /data"):
        parse_spec(doc)


def test_secret_file_inside_a_volume_is_refused() -> None:
    doc = _set(good(), "files.0.path", "/data/key")
    with pytest.raises(SpecError, match=r"files\[0\].path: /data/key is inside volume /data"):
        parse_spec(doc)


def test_duplicate_file_paths_are_refused() -> None:
    doc = _set(good(), "files", [{"path": "/k", "secret": "a"}, {"path": "/k", "secret": "b"}])
    with pytest.raises(SpecError, match=r"files\[1\].path: '/k' appears more than once"):
        parse_spec(doc)


def test_volume_prefix_is_not_nesting() -> None:
    doc = _set(
        good(), "volumes", [{"path": "/data", "name": "a"}, {"path": "/database", "name": "b"}]
    )
    assert len(parse_spec(doc).volumes) == 2


@pytest.mark.parametrize(
    ("memory", "size"), [("1K", 1024), ("512M", 512 << 20), ("3G", 3 << 30), ("1T", 1 << 40)]
)
def test_memory_sizes(memory: str, size: int) -> None:
    assert parse_spec(_set(good(), "tee.memory", memory)).tee.memory_bytes == size


def test_secret_values_are_not_in_the_model() -> None:
    # the spec only names secrets; the dump must hold the name, never a value
    dumped = parse_spec(good()).model_dump(mode="json")
    assert dumped["process"]["env"]["DB_PASSWORD"] == {"secret": "db-password"}


def test_format_loc() -> None:
    assert format_loc(("files", 0, "mode")) == "files[0].mode"
    assert format_loc(("process", "env", "X", "[key]")) == "process.env.X (key)"


def test_allowed_keys_walks_lists_and_optionals() -> None:
    assert allowed_keys(PodSpec, ("files", 0)) == ["field", "mode", "path", "secret"]
    assert allowed_keys(PodSpec, ("kms",)) == ["identity", "url"]
    assert allowed_keys(PodSpec, ("process", "env", "X")) == []


_toml_scalar = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.text(max_size=12),
    st.floats(allow_nan=False),
)
_toml_value = st.recursive(
    _toml_scalar,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


@given(st.dictionaries(st.sampled_from([*allowed_keys(PodSpec, ()), "x"]), _toml_value, max_size=6))
def test_arbitrary_documents_give_spec_errors_only(doc: dict[str, Any]) -> None:
    try:
        parse_spec(doc)
    except SpecError as exc:
        assert exc.message.startswith("sealpod.toml is invalid:")


@given(st.data())
def test_mutating_one_key_of_a_good_spec(data: st.DataObject) -> None:
    doc = good()
    table = data.draw(st.sampled_from(sorted(doc)))
    if isinstance(doc[table], dict) and doc[table]:
        key = data.draw(st.sampled_from(sorted(doc[table])))
        doc[table][key] = data.draw(_toml_value)
    else:
        doc[table] = data.draw(_toml_value)
    try:
        spec = parse_spec(doc)
    except SpecError as exc:
        # the message names the changed table (or, for a moved volume, the file it now covers)
        assert table in exc.message or (table == "volumes" and "inside volume" in exc.message)
        return
    assert isinstance(spec, PodSpec)


def test_memory_bytes_of_an_unvalidated_model_is_a_typed_error_not_an_assert() -> None:
    # model_construct() skips validators; memory_bytes must still refuse, also under python -O.
    from sealpod.spec.model import TeeSpec

    with pytest.raises(SpecError, match=r"tee\.memory is 'lots', expected a size"):
        _ = TeeSpec.model_construct(memory="lots").memory_bytes
