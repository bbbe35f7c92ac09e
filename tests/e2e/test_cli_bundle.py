"""The bundle commands as a user runs them: real processes, exit codes, --json parsed,
tampering refused with every difference listed, and never a traceback."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest
from cli_process import quick_start, sealpod


def ok_json(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert isinstance(doc, dict) and doc["ok"] is True
    return doc


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The newcomer's path from the README: keygen, init, build (plain output)."""
    work = tmp_path_factory.mktemp("cli")
    quick_start(work, pod="demo", bundle="out")
    return work


def test_quick_start_works_as_is(built: Path) -> None:
    assert stat.S_IMODE((built / "k.pem").stat().st_mode) == 0o600
    assert (built / "out/manifest.json").is_file() and (built / "out/signature.json").is_file()


def test_build_prints_the_identity(tmp_path: Path, built: Path) -> None:
    result = sealpod(
        "build", "--spec", "demo/sealpod.toml", "--key", "k.pem", "-o", tmp_path / "b", cwd=built
    )
    assert result.returncode == 0
    assert "measurement" in result.stdout and "signer id" in result.stdout
    assert "\x1b[" not in result.stderr  # no progress bar when stderr is not a terminal


def test_json_outputs_agree(built: Path, tmp_path: Path) -> None:
    key = ok_json(sealpod("keygen", "-o", tmp_path / "k2.pem", "--json", cwd=built))
    build = ok_json(
        sealpod("build", "--spec", "demo/sealpod.toml", "--key", tmp_path / "k2.pem",
                "-o", tmp_path / "b", "--json", cwd=built)
    )  # fmt: skip
    inspect = ok_json(sealpod("inspect", tmp_path / "b", "--json", cwd=built))
    verify = ok_json(sealpod("verify-bundle", tmp_path / "b", "--json", cwd=built))
    assert key["signer_id"] == build["signer_id"] == inspect["signer_id"] == verify["signer_id"]
    assert build["measurement"] == inspect["measurement"] == verify["measurement"]
    assert inspect["product_id"] == 1 and inspect["svn"] == 1
    assert inspect["volumes"] == [{"name": "app-data", "path": "/data"}]
    assert inspect["process"]["entrypoint"] == "/app/bin/hello"  # type: ignore[index]
    assert inspect["file_count"] == 3 and inspect["total_size"] == verify["total_size"]


def test_same_inputs_same_measurement_via_cli(built: Path, tmp_path: Path) -> None:
    first = json.loads((built / "out/manifest.json").read_text())
    sealpod(
        "build",
        "--spec",
        "demo/sealpod.toml",
        "--key",
        "k.pem",
        "-o",
        tmp_path / "again",
        cwd=built,
    )
    assert (tmp_path / "again/manifest.json").read_bytes() == (
        built / "out/manifest.json"
    ).read_bytes()
    assert first["format"] == "sealpod-manifest/v1"


def test_source_date_epoch_makes_signature_reproducible(built: Path, tmp_path: Path) -> None:
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    for name in ("a", "b"):
        sealpod("build", "--spec", "demo/sealpod.toml", "--key", "k.pem", "-o", tmp_path / name,
                cwd=built, env=env)  # fmt: skip
    sig_a = (tmp_path / "a/signature.json").read_bytes()
    assert sig_a == (tmp_path / "b/signature.json").read_bytes()
    assert json.loads(sig_a)["signed_at"] == "2023-11-14T22:13:20Z"


def test_inspect_shows_secrets_by_name_only(built: Path) -> None:
    result = sealpod("inspect", "out", cwd=built)
    assert result.returncode == 0
    assert "API_TOKEN=<secret api-token>" in result.stdout
    assert "/run/secrets/tls.key <- tls-key" in result.stdout


def test_verify_with_the_right_signer(built: Path) -> None:
    signer = ok_json(sealpod("inspect", "out", "--json", cwd=built))["signer_id"]
    result = sealpod("verify-bundle", "out", "--signer", str(signer), cwd=built)
    assert result.returncode == 0 and "OK" in result.stdout


def test_verify_with_another_signer_fails(built: Path) -> None:
    result = sealpod("verify-bundle", "out", "--signer", "ab" * 32, cwd=built)
    assert result.returncode == 4
    assert "bundle.signature" in result.stderr and "expected " + "ab" * 32 in result.stderr


def _tampered_copy(built: Path, tmp_path: Path) -> Path:
    out = tmp_path / "t"
    result = sealpod("build", "--spec", "demo/sealpod.toml", "--key", "k.pem", "-o", out, cwd=built)
    assert result.returncode == 0
    (out / "rootfs/app/etc/greeting.conf").write_text('GREETING="pwned"\n')
    (out / "rootfs/app/README.txt").unlink()
    (out / "rootfs/app/bin/hello").chmod(0o777)
    (out / "rootfs/app/backdoor").write_text("x")
    return out


def test_tampered_bundle_lists_every_difference(built: Path, tmp_path: Path) -> None:
    out = _tampered_copy(built, tmp_path)
    result = sealpod("verify-bundle", out, cwd=built)
    assert result.returncode == 4
    for line in (
        "modified: /app/etc/greeting.conf",
        "missing: /app/README.txt",
        "mode-changed: /app/bin/hello (expected 0755, found 0777)",
        "extra: /app/backdoor",
    ):
        assert line in result.stderr


def test_tampered_bundle_json(built: Path, tmp_path: Path) -> None:
    out = _tampered_copy(built, tmp_path)
    result = sealpod("verify-bundle", out, "--json", cwd=built)
    assert result.returncode == 4
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and doc["error"]["code"] == "bundle.integrity"
    kinds = {(d["kind"], d["path"]) for d in doc["differences"]}
    assert kinds == {
        ("modified", "/app/etc/greeting.conf"),
        ("missing", "/app/README.txt"),
        ("mode-changed", "/app/bin/hello"),
        ("extra", "/app/backdoor"),
    }


def test_edited_manifest_is_a_signature_error(built: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    sealpod("build", "--spec", "demo/sealpod.toml", "--key", "k.pem", "-o", out, cwd=built)
    manifest = out / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(b'"debug":false', b'"debug":true'))
    for command in ("inspect", "verify-bundle"):
        result = sealpod(command, out, cwd=built)
        assert result.returncode == 4 and "bundle.signature" in result.stderr


SPEC = ("--spec", "demo/sealpod.toml")


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("keygen", "-o", "k.pem"), 2, "already exists"),
        (("build", "--spec", "nope.toml", "--key", "k.pem", "-o", "x"), 3, "cannot read pod spec"),
        (("build", *SPEC, "--key", "nokey.pem", "-o", "x"), 2, "cannot read author key"),
        (("build", *SPEC, "--key", "k.pem", "-o", "out"), 4, "already exists"),
        (("inspect", "demo"), 4, "not a sealpod bundle"),
        (("verify-bundle", "out", "--signer", "xyz"), 2, "expected 64 hex digits"),
        (("init", "demo"), 2, "already exists"),
    ],
    ids=["keygen-exists", "no-spec", "no-key", "output-exists", "not-a-bundle", "bad-signer",
         "init-exists"],
)  # fmt: skip
def test_errors_have_family_exit_codes(
    built: Path, args: tuple[str, ...], code: int, fragment: str
) -> None:
    result = sealpod(*args, cwd=built)
    assert result.returncode == code, result.stderr
    assert fragment in result.stderr


def test_bad_spec_names_the_key(built: Path, tmp_path: Path) -> None:
    spec = tmp_path / "bad.toml"
    text = (built / "demo/sealpod.toml").read_text()
    spec.write_text(text.replace('API_TOKEN = { secret = "api-token" }', "API_TOKEN = 42"))
    (tmp_path / "rootfs").symlink_to(built / "demo/rootfs")
    result = sealpod(
        "build", "--spec", spec, "--key", "k.pem", "-o", tmp_path / "o", "--json", cwd=built
    )
    assert result.returncode == 3
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "spec"
    assert "process.env.API_TOKEN: expected a string or {secret = NAME}" in error["message"]


def test_passphrase_protected_key(built: Path, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("hunter2\n")
    key = tmp_path / "enc.pem"
    assert ok_json(
        sealpod(
            "keygen",
            "-o",
            key,
            "--type",
            "ecdsa-p384",
            "--passphrase-file",
            pw,
            "--json",
            cwd=built,
        )
    )["encrypted"]
    build = ("build", "--spec", "demo/sealpod.toml", "--key", key, "-o")
    no_pass = sealpod(*build, tmp_path / "a", cwd=built)
    assert no_pass.returncode == 2 and "passphrase-protected" in no_pass.stderr
    wrong = sealpod(*build, tmp_path / "a", cwd=built, env={"SEALPOD_KEY_PASSPHRASE": "wrong"})
    assert wrong.returncode == 5 and "wrong passphrase" in wrong.stderr
    assert "hunter2" not in wrong.stderr
    right = sealpod(*build, tmp_path / "a", cwd=built, env={"SEALPOD_KEY_PASSPHRASE": "hunter2"})
    assert right.returncode == 0, right.stderr
    assert sealpod(*build, tmp_path / "b", "--passphrase-file", pw, cwd=built).returncode == 0


def test_garbage_key_is_refused_without_traceback(built: Path, tmp_path: Path) -> None:
    key = tmp_path / "garbage.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    key.chmod(0o600)
    result = sealpod(
        "build", "--spec", "demo/sealpod.toml", "--key", key, "-o", tmp_path / "o", cwd=built
    )
    assert result.returncode == 2 and "not a PEM private key" in result.stderr


def test_oci_output(built: Path, tmp_path: Path) -> None:
    pytest.importorskip("sealpod.build.oci")
    doc = ok_json(
        sealpod("build", "--spec", "demo/sealpod.toml", "--key", "k.pem", "-o", tmp_path / "b",
                "--oci", "--json", cwd=built)
    )  # fmt: skip
    layout = tmp_path / "b.oci"
    assert (layout / "oci-layout").is_file() and (layout / "index.json").is_file()
    oci = doc["oci"]
    assert isinstance(oci, dict) and oci["path"] == str(layout)
    digest = str(oci["digest"]).removeprefix("sha256:")
    manifest = json.loads((layout / "blobs/sha256" / digest).read_text())
    assert manifest["annotations"]["org.sealpod.measurement"] == doc["measurement"]
    assert manifest["annotations"]["org.sealpod.signer"] == doc["signer_id"]
