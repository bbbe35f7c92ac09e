"""The runtime's small I/O-free decisions: which KMS and pin, volume presence, provisioning
of fields, events, the protected store and the seccomp program."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from sealpod.errors import ConfigError, RollbackDetected, SealpodError, VolumeError
from sealpod.kms.client import ReleasedSecret
from sealpod.runtime.events import Reporter
from sealpod.runtime.kms import resolve_target
from sealpod.runtime.memory import SecretStore
from sealpod.runtime.plan import SecretFile
from sealpod.runtime.provision import file_contents
from sealpod.runtime.seccomp import DENIED_SYSCALLS, default_filter
from sealpod.runtime.volumes import check_presence, prepare_directory
from sealpod.spec.model import KmsSpec

PIN = "ab" * 32


def test_the_measured_pin_wins_and_the_host_cannot_change_it() -> None:
    spec = KmsSpec(url="https://kms.example:8443", identity=PIN)
    target = resolve_target(spec, url=None, identity=None, unsafe_any_kms=False, ca=None)
    assert target.identity == PIN and target.measured_pin
    with pytest.raises(ConfigError, match="cannot change"):
        resolve_target(spec, url=None, identity="cd" * 32, unsafe_any_kms=False, ca=None)
    same = resolve_target(spec, url="https://lb:1", identity=PIN, unsafe_any_kms=False, ca=None)
    assert same.url == "https://lb:1" and same.measured_pin


def test_an_unpinned_kms_needs_the_unsafe_flag_and_a_pin_needs_https() -> None:
    with pytest.raises(ConfigError, match="--unsafe-any-kms"):
        resolve_target(None, url="https://k:1", identity=None, unsafe_any_kms=False, ca=None)
    loose = resolve_target(None, url="https://k:1", identity=None, unsafe_any_kms=True, ca=None)
    assert loose.identity is None and loose.describe()["pinned_by"] is None
    with pytest.raises(ConfigError, match="not https"):
        resolve_target(None, url="http://k:1", identity=PIN, unsafe_any_kms=False, ca=None)
    with pytest.raises(ConfigError, match="64 hex"):
        resolve_target(None, url="https://k:1", identity="zz", unsafe_any_kms=False, ca=None)
    with pytest.raises(ConfigError, match="no KMS"):
        resolve_target(None, url=None, identity=None, unsafe_any_kms=True, ca=None)


def test_a_host_pin_is_reported_as_the_hosts() -> None:
    target = resolve_target(None, url="https://k:1", identity=PIN, unsafe_any_kms=False, ca=None)
    assert target.describe()["pinned_by"] == "host"


def test_a_deleted_volume_the_kms_knows_is_a_rollback() -> None:
    assert check_presence("data", False, None, 0) is True
    assert check_presence("data", True, "aa" * 16, 7) is False
    with pytest.raises(RollbackDetected, match="no copy"):
        check_presence("data", False, "aa" * 16, 7)


def test_a_file_field_takes_one_member_of_a_json_secret() -> None:
    tls = json.dumps({"key": "KEY-PEM", "cert": "CERT-PEM", "ca": "CA-PEM"}).encode()
    secret = ReleasedSecret(name="tls", version=1, content_type="application/json", value=tls)
    f = SecretFile(path="/run/k", secret="tls", field="key", mode=0o400)
    assert file_contents(f, secret) == b"KEY-PEM"
    whole = SecretFile(path="/run/k", secret="tls", field=None, mode=0o400)
    assert file_contents(whole, secret) == tls
    plain = ReleasedSecret(name="tls", version=1, content_type="text/plain", value=b"s3cret")
    with pytest.raises(ConfigError, match="field 'key'") as info:
        file_contents(f, plain)
    assert "s3cret" not in str(info.value)


def test_events_are_json_lines_with_phase_outcome_and_duration() -> None:
    stream = io.StringIO()
    events = Reporter(json_lines=True, stream=stream)
    with events.phase("verify") as detail:
        detail["files"] = 3
    with pytest.raises(VolumeError), events.phase("volumes"):
        raise VolumeError("boom")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["phase"] == "verify" and lines[0]["outcome"] == "ok" and lines[0]["files"] == 3
    assert lines[1]["outcome"] == "error" and lines[1]["code"] == "volume"
    assert all(isinstance(line["duration_ms"], float) for line in lines)


def test_human_events_read_as_one_line_per_phase() -> None:
    stream = io.StringIO()
    with Reporter(stream=stream).phase("attest") as detail:
        detail["secrets"] = 2
    assert stream.getvalue().startswith("sealpod: attest ok (")
    assert stream.getvalue().rstrip().endswith("secrets=2")


def test_the_secret_store_hands_out_views_and_wipes() -> None:
    store = SecretStore({"a": b"alpha", "b": b"\x00" * 5000})
    assert store.copy("a") == b"alpha"
    with store.view("b") as view:
        assert len(view) == 5000
    assert "alpha" not in repr(store)
    store.wipe()
    with pytest.raises(ValueError, match="wiped"):
        store.view("a")
    store.wipe()  # idempotent


def test_the_default_seccomp_filter_compiles_to_bpf() -> None:
    program = default_filter()
    assert len(program) % 8 == 0 and len(program) > 8 * len(DENIED_SYSCALLS) // 2
    assert issubclass(RollbackDetected, SealpodError)


def test_a_volume_directory_others_can_write_or_a_symlink_is_refused(tmp_path: Path) -> None:
    # sealpod serves volumes as root: a directory another user can write lets that user plant
    # symlinks (journal -> /etc/shadow) that root would write through.
    vdir = tmp_path / "volumes"
    assert prepare_directory(vdir, "data") == vdir / "data"
    (vdir / "data").mkdir()
    (vdir / "data").chmod(0o777)
    with pytest.raises(VolumeError, match="writable by other users"):
        prepare_directory(vdir, "data")
    (vdir / "data").rmdir()
    vdir.chmod(0o770)
    with pytest.raises(VolumeError, match="writable by other users"):
        prepare_directory(vdir, "data")
    vdir.chmod(0o700)
    (vdir / "data").symlink_to(tmp_path)
    with pytest.raises(VolumeError, match="symlink"):
        prepare_directory(vdir, "data")
    (vdir / "data").unlink()
    (vdir / "data").write_text("not a directory")
    with pytest.raises(VolumeError, match="not a directory"):
        prepare_directory(vdir, "data")


def test_a_volume_directory_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    vdir = tmp_path / "volumes"
    (vdir / "data").mkdir(parents=True, mode=0o700)
    os.chown(vdir / "data", 1000, 1000)
    with pytest.raises(VolumeError, match="owned by uid 1000"):
        prepare_directory(vdir, "data")
    os.chown(vdir / "data", 0, 0)
    os.chown(vdir, 1000, 1000)
    with pytest.raises(VolumeError, match="owned by uid 1000"):
        prepare_directory(vdir, "data")


def test_an_unreadable_bundle_path_or_home_is_a_typed_error_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typing import cast

    from sealpod.build.bundle import Bundle
    from sealpod.errors import BundleError, TeeError
    from sealpod.runtime.backends import open_run_backend
    from sealpod.runtime.plan import RunOptions, TeeChoice
    from sealpod.runtime.run import prepare

    # stat() fails with ENAMETOOLONG here (EACCES for a non-root user behind a closed
    # directory): pathlib's is_dir()/is_file() raise instead of answering False.
    too_long = tmp_path / ("a" * 300)
    options = RunOptions(bundle=too_long, unsafe_any_signer=True)
    with pytest.raises(BundleError, match="cannot read"):
        prepare(options, Reporter(stream=io.StringIO()))
    monkeypatch.setenv("SEALPOD_HOME", str(too_long))
    with pytest.raises(TeeError, match="simulated platform"):
        open_run_backend(TeeChoice.sim, cast(Bundle, None))


@pytest.mark.parametrize("name", ["[/]x", "[red]x", "[link=file:///etc]x"])
def test_a_bundle_path_that_looks_like_rich_markup_is_printed_as_is(
    tmp_path: Path, name: str
) -> None:
    from typer.testing import CliRunner

    from sealpod.cli.main import app

    bundle = tmp_path / name
    result = CliRunner().invoke(app, ["run", str(bundle), "--unsafe-any-signer"])
    assert result.exit_code == 4, result.output
    assert f"{bundle} is not a sealpod bundle" in result.output


def test_the_user_table_is_used_only_if_it_is_the_measured_one(tmp_path: Path) -> None:
    # The verify phase hashed /etc/passwd; the plan reads it again. A bundle owner who swaps
    # it in between (app -> uid 0) must not choose the uid the workload runs as.
    import datetime as dt

    from sealpod.build.bundle import build_bundle, load_bundle
    from sealpod.build.keys import generate_key
    from sealpod.errors import BundleIntegrityError
    from sealpod.runtime.run import _image_file
    from sealpod.spec.load import image_source, load_spec
    from sealpod.spec.template import write_example

    write_example(tmp_path)
    passwd = tmp_path / "rootfs" / "etc" / "passwd"
    passwd.parent.mkdir(parents=True, exist_ok=True)
    passwd.write_text("app:x:1000:1000::/:/bin/sh\n")
    spec = load_spec(tmp_path / "sealpod.toml")
    built = build_bundle(
        spec,
        image=image_source(spec, tmp_path / "sealpod.toml"),
        key=generate_key(),
        out=tmp_path / "bundle",
        signed_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )
    bundle = load_bundle(built.path)
    assert _image_file(bundle, "/etc/passwd") == b"app:x:1000:1000::/:/bin/sh\n"
    swapped = bundle.rootfs / "etc" / "passwd"
    swapped.write_text("app:x:0:0::/:/bin/sh\n")
    with pytest.raises(BundleIntegrityError, match="/etc/passwd"):
        _image_file(bundle, "/etc/passwd")


def test_a_release_answer_larger_than_joserfcs_64_kib_default_opens() -> None:
    # Every secret of a pod comes in one JWE; the KMS stores values up to 512 KiB, so a pod's
    # answer is often larger than joserfc's default ciphertext limit (64 KiB), which made
    # `sealpod run` fail with "JWE does not decrypt: ... tampered" (exit 5).
    from cryptography.hazmat.primitives.asymmetric import ec

    from sealpod.errors import CryptoError
    from sealpod.kms import jwe

    key = ec.generate_private_key(ec.SECP256R1())
    value = os.urandom(3 << 18)  # 768 KiB: more than one secret's limit
    token = jwe.encrypt_to(key.public_key(), value, kid="k", cty="x")
    assert jwe.decrypt(token, key)[0] == value
    huge = jwe.encrypt_to(key.public_key(), bytes(jwe.MAX_JWE_CIPHERTEXT + 1), kid="k", cty="x")
    with pytest.raises(CryptoError):
        jwe.decrypt(huge, key)


class _LossyKms:
    """A KMS client whose first swap is applied but whose answer is lost."""

    def __init__(self) -> None:
        self.held: tuple[str | None, int] = (None, 0)
        self.lose_next = True

    def volume_counter(self, session: object, name: str) -> object:
        from types import SimpleNamespace

        return SimpleNamespace(volume_id=self.held[0], counter=self.held[1])

    def advance_volume_counter(
        self, session: object, name: str, *, volume_id: str, expected: int, new: int
    ) -> object:
        from sealpod.errors import KmsUnavailable

        if self.held[1] != expected or self.held[0] not in (None, volume_id):
            raise RollbackDetected(f"holds {self.held}")
        self.held = (volume_id, new)
        if self.lose_next:
            self.lose_next = False
            raise KmsUnavailable("connection reset after the swap")
        return self.held


class _Counters:
    def __init__(self, client: _LossyKms) -> None:
        self.client = client

    def refresh(self, *, reattest: bool = False) -> tuple[_LossyKms, object]:
        return self.client, object()

    def current(self, name: str) -> tuple[str | None, int]:
        return self.client.held


def test_a_swap_whose_answer_was_lost_is_not_taken_for_a_rollback() -> None:
    from sealpod.runtime.volumes import RenewingFreshness

    kms = _LossyKms()
    fresh = RenewingFreshness(_Counters(kms), "data")  # type: ignore[arg-type]
    vid = "ab" * 16
    fresh.advance(vid, 0, 3)  # applied, answer lost, retried: the KMS holds exactly ours
    assert kms.held == (vid, 3)
    with pytest.raises(RollbackDetected):
        fresh.advance(vid, 1, 5)  # a real conflict stays a refusal


def test_a_volume_name_leaves_room_for_its_key_secret() -> None:
    from sealpod.errors import SpecError
    from sealpod.spec.model import parse_spec

    volume = {"path": "/d", "name": "a" * 122}
    doc = {"image": {"source": "r"}, "process": {"entrypoint": "/a"},
           "identity": {"product_id": 1, "svn": 1}, "volumes": [volume]}  # fmt: skip
    with pytest.raises(SpecError, match="at most 121 characters"):
        parse_spec(doc)
