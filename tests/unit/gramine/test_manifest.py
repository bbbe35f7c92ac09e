"""Gramine manifests from a bundle: what is generated, parsed back with tomllib, and what the
checker (written from Gramine's manifest syntax docs) refuses."""

from __future__ import annotations

import copy
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sealpod.build.bundle import Bundle, build_bundle
from sealpod.build.keys import generate_key
from sealpod.build.manifest import FileEntry
from sealpod.errors import SpecError
from sealpod.gramine.manifest import (
    HostLayout,
    build_manifest,
    enclave_size,
    render_manifest,
    volume_key_name,
)
from sealpod.gramine.manifest_check import check_manifest
from sealpod.gramine.pipeline import resolve_user, write_manifest
from sealpod.spec.load import image_source, load_spec
from sealpod.spec.template import write_example

LAYOUT = HostLayout(
    bundle_dir="/srv/pod", premain_dir="/opt/sealpod/premain",
    volume_dir="/var/lib/sealpod/gv", uid=1000, gid=1000,
)  # fmt: skip


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    where = tmp_path_factory.mktemp("pod")
    write_example(where)
    spec = load_spec(where / "sealpod.toml")
    return build_bundle(
        spec, image=image_source(spec, where / "sealpod.toml"), key=generate_key(),
        out=where / "bundle", signed_at=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip


@pytest.fixture(scope="module")
def doc(bundle: Bundle) -> dict[str, Any]:
    return tomllib.loads(
        render_manifest(
            build_manifest(bundle.manifest, measurement=bundle.measurement, layout=LAYOUT)
        )
    )


def test_entrypoint_argv_and_env_leave_secrets_out(bundle: Bundle, doc: dict[str, Any]) -> None:
    assert doc["libos"]["entrypoint"] == "/sealpod/premain/sealpod-premain"
    assert doc["loader"]["argv"][0] == doc["libos"]["entrypoint"]
    env = doc["loader"]["env"]
    secret_names = [k for k, v in bundle.manifest.process.env.items() if not isinstance(v, str)]
    assert secret_names and not set(secret_names) & set(env)  # API_TOKEN is a KMS secret
    literal = {k: v for k, v in bundle.manifest.process.env.items() if isinstance(v, str)}
    assert env == literal
    assert (doc["loader"]["uid"], doc["loader"]["gid"]) == (1000, 1000)
    assert "insecure__use_host_env" not in doc["loader"]


def test_mounts_rootfs_tmpfs_and_encrypted_volumes(bundle: Bundle, doc: dict[str, Any]) -> None:
    assert doc["fs"]["root"] == {"type": "chroot", "uri": "file:/srv/pod/rootfs"}
    mounts = {m["path"]: m for m in doc["fs"]["mounts"]}
    assert mounts["/tmp"]["type"] == mounts["/run"]["type"] == "tmpfs"
    for volume in bundle.manifest.volumes:
        m = mounts[volume.path]
        assert m["type"] == "encrypted"
        assert m["key_name"] == volume_key_name(volume.name)
        assert m["uri"] == f"file:/var/lib/sealpod/gv/{volume.name}/"
    assert "insecure__keys" not in doc["fs"]


def test_trusted_files_carry_the_bundle_hashes(bundle: Bundle, doc: dict[str, Any]) -> None:
    trusted = doc["sgx"]["trusted_files"]
    tables = {t["uri"]: t["sha256"] for t in trusted if isinstance(t, dict)}
    files = [e for e in bundle.manifest.trusted.entries if isinstance(e, FileEntry)]
    assert files
    for entry in files:
        assert tables[f"file:/srv/pod/rootfs{entry.path}"] == entry.sha256
    # The bundle manifest is trusted with its hash = the sealpod measurement.
    assert tables["file:/srv/pod/manifest.json"] == bundle.measurement.hex()
    assert "file:/opt/sealpod/premain/" in trusted


def test_sgx_settings_come_from_the_spec(bundle: Bundle, doc: dict[str, Any]) -> None:
    sgx = doc["sgx"]
    assert sgx["remote_attestation"] == "dcap"
    assert sgx["isvprodid"] == bundle.manifest.identity.product_id
    assert sgx["isvsvn"] == bundle.manifest.identity.svn
    assert sgx["debug"] is bundle.manifest.tee.debug
    assert sgx["max_threads"] == bundle.manifest.tee.threads + 4
    assert sgx["enclave_size"] == enclave_size(bundle.manifest.tee.memory_bytes)
    assert check_manifest(doc) == []


@pytest.mark.parametrize(
    ("memory", "expected"),
    [(1, "256M"), (512 << 20, "512M"), ((512 << 20) + 1, "1G"), (3 << 30, "4G")],
)
def test_enclave_size_is_a_power_of_two(memory: int, expected: str) -> None:
    assert enclave_size(memory) == expected


def _with(doc: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node = out
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return out


BAD = [
    ("sgx.enclave_sise", "512M", "unknown manifest key"),
    ("sgx.enclave_size", "300M", "not a power of two"),
    ("sgx.enclave_size", 512, "expected a size"),
    ("sgx.max_threads", "4", "expected an integer"),
    ("sgx.debug", "false", "expected a boolean"),
    ("sgx.isvsvn", 70000, "expected 0..65535"),
    ("sgx.remote_attestation", "epid", "expected one of none, dcap"),
    ("fs.insecure__keys.default", "00" * 16, "insecure option"),
    ("loader.insecure__use_host_env", True, "insecure option"),
    ("sgx.file_check_policy", "allow_all_but_log", "is insecure"),
    ("sgx.allowed_files", ["file:/etc/"], "unprotected"),
    ("loader.argv", ["a", 1], "array of strings"),
    ("loader.env.X", {"passthrough": False}, "passthrough"),
    ("sgx.trusted_files", [{"uri": "file:/a", "sha256": "XYZ"}], "64 lower-case hex"),
    ("sgx.trusted_files", ["/no/scheme"], "URI starting with file:"),
    ("fs.mounts", [{"type": "overlay", "path": "/x", "uri": "file:/x"}], "expected one of"),
    ("fs.mounts", [{"type": "chroot", "path": "rel", "uri": "file:/x"}], "absolute path"),
    ("fs.mounts", [{"type": "tmpfs", "path": "/t", "key_name": "k"}], "only encrypted"),
    ("fs.mounts", [{"path": "/t", "uri": "file:/t", "colour": "red"}], "unknown key"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD)
def test_checker_refuses(doc: dict[str, Any], path: str, value: object, message: str) -> None:
    problems = check_manifest(_with(doc, path, value))
    assert any(message in p for p in problems), problems


def test_checker_needs_an_entrypoint_and_lists_every_problem(doc: dict[str, Any]) -> None:
    bad = copy.deepcopy(doc)
    del bad["libos"]
    bad["sgx"]["debug"] = 1
    problems = check_manifest(bad)
    assert any("libos.entrypoint" in p for p in problems)
    assert any("sgx.debug" in p for p in problems)


def test_render_refuses_a_manifest_the_checker_refuses(doc: dict[str, Any]) -> None:
    with pytest.raises(SpecError, match=r"sgx\.enclave_size"):
        render_manifest(_with(doc, "sgx.enclave_size", "3M"))


def test_write_manifest_resolves_paths_and_writes_a_checked_file(
    bundle: Bundle, tmp_path: Path
) -> None:
    result = write_manifest(
        bundle.path, tmp_path / "g", premain_dir="/opt/p", volume_dir="/var/v",
        signer=bundle.signer_id,
    )  # fmt: skip
    doc = tomllib.loads(result.path.read_text())
    assert doc["fs"]["root"]["uri"] == f"file:{bundle.path.resolve()}/rootfs"
    assert result.trusted_files == len(doc["sgx"]["trusted_files"])
    assert check_manifest(doc) == []


def test_resolve_user_by_number_or_passwd_name(tmp_path: Path) -> None:
    assert resolve_user("0", tmp_path) == (0, 0)
    assert resolve_user("5:6", tmp_path) == (5, 6)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(
        "root:x:0:0::/:/bin/sh\nredis:x:999:998::/:/bin/false\n"
    )
    assert resolve_user("redis", tmp_path) == (999, 998)
    with pytest.raises(SpecError, match="not a user of"):
        resolve_user("nobody", tmp_path)
