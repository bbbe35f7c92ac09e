"""The run plan, the sandbox command line and the user table: pure, so every rule is checked
here without starting anything."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealpod.build.manifest import Manifest, Observed, make_manifest
from sealpod.errors import ConfigError, SpecError
from sealpod.runtime.plan import (
    DEFAULT_PATH,
    Network,
    RunOptions,
    SandboxKind,
    make_plan,
    workload_environment,
)
from sealpod.runtime.sandbox import SandboxLayout, bwrap_argv, parse_bwrap_version
from sealpod.runtime.users import UserTable
from sealpod.spec.model import parse_spec

H = hashlib.sha256(b"x").hexdigest()
PASSWD = b"root:x:0:0::/root:/bin/sh\nredis:x:999:998::/var/lib/redis:/bin/false\nbroken\n"


def manifest(**changes: Any) -> Manifest:
    doc: dict[str, Any] = {
        "image": {"source": "rootfs"},
        "process": {
            "entrypoint": "/app/run",
            "args": ["--conf", "/app/conf"],
            "user": "redis",
            "env": {"MODE": "prod", "PW": {"secret": "db-password"}},
        },
        "identity": {"product_id": 1, "svn": 2},
        "volumes": [{"path": "/data", "name": "data"}],
        "files": [
            {"path": "/run/secrets/tls.key", "secret": "tls", "field": "key", "mode": 0o400},
            {"path": "/run/secrets/pw", "secret": "db-password"},
        ],
    }
    doc.update(changes)
    observed = [
        Observed(path="/app", kind="dir", mode=0o755),
        Observed(path="/app/run", kind="file", mode=0o755, size=1, sha256=H),
        Observed(path="/data", kind="dir", mode=0o755),
        Observed(path="/var", kind="dir", mode=0o755),
        Observed(path="/var/cache", kind="dir", mode=0o755),
    ]
    return make_manifest(parse_spec(doc), observed)


def plan_of(m: Manifest, **options: Any) -> Any:
    return make_plan(
        m,
        measurement=m.measurement,
        signer_id=b"\x01" * 32,
        options=RunOptions(bundle=Path("b"), **options),
        users=UserTable.parse(PASSWD),
    )


def test_the_plan_takes_argv_user_env_files_and_volumes_from_the_manifest() -> None:
    plan = plan_of(manifest())
    assert plan.argv == ("/app/run", "--conf", "/app/conf")
    assert (plan.uid, plan.gid) == (999, 998)
    assert [(v.name, v.secret) for v in plan.env] == [
        ("PATH", None), ("MODE", None), ("PW", "db-password")
    ]  # fmt: skip
    assert plan.secret_names == ("db-password", "tls", "volume.data")
    assert plan.tmpfs == ("/tmp", "/run")
    assert plan.network is Network.none and plan.sandbox is SandboxKind.bwrap


def test_describe_names_every_variable_but_never_a_value() -> None:
    described = plan_of(manifest()).describe()
    assert {"name": "PW", "source": "secret:db-password"} in described["env"]
    assert {"name": "MODE", "source": "manifest"} in described["env"]
    assert "prod" not in str(described)


def test_host_arguments_need_the_insecure_opt_in() -> None:
    with pytest.raises(ConfigError, match="insecure__use_cmdline_argv"):
        plan_of(manifest(), host_args=("--evil",))
    opted = manifest(runtime={"insecure__use_cmdline_argv": True})
    assert plan_of(opted, host_args=("x",)).argv[-1] == "x"


def test_an_unknown_user_is_a_spec_error() -> None:
    m = manifest(process={"entrypoint": "/app/run", "user": "nobody-here"})
    with pytest.raises(SpecError, match="nobody-here"):
        plan_of(m)


def test_ready_tcp_and_extra_tmpfs_come_from_runtime() -> None:
    m = manifest(runtime={"tmpfs": ["/var/cache"], "ready_tcp": "127.0.0.1:16379"})
    plan = plan_of(m)
    assert plan.ready_tcp == ("127.0.0.1", 16379)
    assert plan.tmpfs == ("/tmp", "/run", "/var/cache")


def test_sandbox_argv_isolates_and_feeds_secrets_through_descriptors() -> None:
    plan = plan_of(manifest())
    layout = SandboxLayout(
        bwrap="/usr/bin/bwrap", rootfs="/stage/rootfs", volumes={"data": "/stage/v/data"},
        file_fds=[10, 11], seccomp_fd=9, info_fd=7, status_fd=8,
    )  # fmt: skip
    argv = bwrap_argv(plan, layout)
    for flag in (
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-net",
        "--die-with-parent",
        "--new-session",
        "--disable-userns",
    ):
        assert flag in argv, flag  # fmt: skip
    assert argv[argv.index("--ro-bind") + 1 : argv.index("--ro-bind") + 3] == ["/stage/rootfs", "/"]
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert ["--uid", "999", "--gid", "998"] == argv[2:6]
    i = argv.index("--file")
    assert argv[i - 2 : i + 3] == ["--perms", "0400", "--file", "10", "/run/secrets/tls.key"]
    assert argv[argv.index("--bind") + 1 : argv.index("--bind") + 3] == ["/stage/v/data", "/data"]
    assert argv[argv.index("--seccomp") + 1] == "9"
    assert argv[argv.index("--") + 1 :] == ["/app/run", "--conf", "/app/conf"]


def test_network_host_keeps_the_network_and_sandbox_none_drops_isolation() -> None:
    layout = SandboxLayout(bwrap="bwrap", rootfs="/r", volumes={"data": "/v"}, file_fds=[3, 4],
                           seccomp_fd=5)  # fmt: skip
    host = bwrap_argv(plan_of(manifest(), network=Network.host), layout)
    assert "--unshare-net" not in host and "--unshare-pid" in host
    bare = bwrap_argv(plan_of(manifest(), sandbox=SandboxKind.none), layout)
    assert "--unshare-pid" not in bare and "--seccomp" not in bare
    assert "--ro-bind" in bare  # the layout stays: read-only root, secrets in memory


def test_the_layout_must_match_the_plan() -> None:
    with pytest.raises(ValueError, match="file descriptor"):
        bwrap_argv(plan_of(manifest()), SandboxLayout(bwrap="b", rootfs="/r"))


def test_environment_refuses_a_secret_that_cannot_be_a_variable() -> None:
    plan = plan_of(manifest())
    env = workload_environment(plan, {"db-password": b"s3cret"})
    assert env == {"PATH": DEFAULT_PATH, "MODE": "prod", "PW": "s3cret"}
    with pytest.raises(ConfigError, match="PW") as info:
        workload_environment(plan, {"db-password": b"a\x00b"})
    assert "a\\x00b" not in str(info.value) and "a\x00b" not in str(info.value)


@pytest.mark.parametrize(
    ("user", "expected"),
    [("0", (0, 0)), ("999", (999, 998)), ("1234", (1234, 1234)), ("5:6", (5, 6)),
     ("redis", (999, 998)), ("root", (0, 0))],
)  # fmt: skip
def test_users_resolve_like_the_image_defines_them(user: str, expected: tuple[int, int]) -> None:
    assert UserTable.parse(PASSWD).resolve(user) == expected


@given(st.binary(max_size=4096))
def test_any_passwd_text_parses_or_is_refused_with_a_typed_error(raw: bytes) -> None:
    table = UserTable.parse(raw)
    for uid, gid in table.users.values():
        assert 0 <= uid <= 2**32 - 2 and 0 <= gid <= 2**32 - 2


def test_bwrap_versions_parse() -> None:
    assert parse_bwrap_version("bubblewrap 0.8.0\n") == (0, 8, 0)
    assert parse_bwrap_version("garbage") is None
    assert parse_bwrap_version("bubblewrap x.y") is None


def test_sandbox_none_reports_the_host_network_it_really_gets() -> None:
    # --sandbox none has no network namespace: the plan, --dry-run and the sandbox event must
    # not claim "network": "none" for a workload that reaches every network the host does.
    plan = plan_of(manifest(), sandbox=SandboxKind.none)
    assert plan.network is Network.host
    assert plan.describe()["network"] == "host"


def test_environment_refuses_a_secret_too_long_for_one_variable() -> None:
    # The kernel refuses a NAME=value string over 128 KiB (MAX_ARG_STRLEN): execve fails with
    # E2BIG and the start was reported as a sandbox failure (exit 14). Say what is wrong.
    plan = plan_of(manifest())
    big = b"A" * (128 << 10)
    with pytest.raises(ConfigError, match="too long for the variable PW"):
        workload_environment(plan, {"db-password": big})


def test_ratls_adds_a_key_and_a_certificate_the_kms_is_not_asked_for() -> None:
    plan = plan_of(manifest(runtime={"ratls": "/run/ratls"}))
    assert plan.ratls
    paths = {f.path: f.mode for f in plan.files}
    assert paths["/run/ratls/key.pem"] == 0o400 and paths["/run/ratls/cert.pem"] == 0o444
    assert plan.secret_names == ("db-password", "tls", "volume.data")
    assert not plan_of(manifest()).ratls


def test_ratls_outside_a_tmpfs_cannot_be_built() -> None:
    with pytest.raises(SpecError, match=r"runtime\.ratls"):
        manifest(runtime={"ratls": "/app"})
