"""Catalog recipes, parameters, specs and sample policies: pure, no rootfs, no processes."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealpod.catalog.model import RESERVED_PORTS, check_value, resolve_params
from sealpod.catalog.recipes import RECIPES, get_recipe
from sealpod.catalog.rootfs import cache_key
from sealpod.catalog.spec import policy_toml
from sealpod.errors import ConfigError, MalformedPolicy
from sealpod.kms.release import parse_release_policy
from sealpod.rootfs.debian import DebianRootfs, mmdebstrap_argv
from sealpod.spec.model import parse_spec

NAMES = sorted(RECIPES)
MEASUREMENT = "ab" * 32
SIGNER = "cd" * 32


def test_the_catalog_has_the_six_entries_of_the_issue() -> None:
    assert set(NAMES) >= {"redis", "mariadb", "postgresql", "nginx", "mosquitto", "python"}


@pytest.mark.parametrize("name", NAMES)
def test_every_entry_renders_a_valid_spec_with_its_secrets_as_files_or_env(name: str) -> None:
    recipe = get_recipe(name)
    layout = recipe.render(recipe.defaults())
    spec = parse_spec(tomllib.loads(layout.spec_toml))
    assert spec.process.user == recipe.user
    assert spec.runtime is not None and spec.runtime.ready_tcp == layout.ready_tcp
    assert layout.ready_tcp.startswith("127.0.0.1:")
    read = {f.secret for f in spec.files}
    read |= {v.secret for v in spec.process.env.values() if not isinstance(v, str)}
    assert read == {s.name for s in layout.secrets}
    assert [(v.name, v.path) for v in spec.volumes] == list(layout.volumes)
    # TLS material comes as fields of the KMS-issued tls-cert secret, on the tmpfs.
    fields = {f.field for f in spec.files if f.secret.endswith("-tls")}
    assert fields == {"key", "cert", "ca"}
    assert all(f.path.startswith("/run/secrets/") for f in spec.files)
    key_files = [f for f in spec.files if f.field == "key" or f.path.endswith("password")]
    assert key_files and all(f.mode == 0o400 for f in key_files)


@pytest.mark.parametrize("name", NAMES)
def test_no_secret_value_and_no_reserved_port_in_what_the_image_carries(name: str) -> None:
    recipe = get_recipe(name)
    layout = recipe.render(recipe.defaults())
    for _what, port in layout.ports:
        assert port not in RESERVED_PORTS
    text = layout.spec_toml + "".join(f.text for f in layout.files)
    assert not re.search(r"(?i)password\s*=\s*['\"][^'\"{]", text)
    for f in layout.files:
        assert "0.0.0.0" not in f.text  # bind loopback, as the tests and docs say


@pytest.mark.parametrize("name", NAMES)
def test_sample_policy_grants_exactly_the_pods_secrets_and_pins_signer_and_product(
    name: str,
) -> None:
    recipe = get_recipe(name)
    layout = recipe.render(recipe.defaults())
    text = policy_toml(layout, measurement=MEASUREMENT, signer=SIGNER, allow_simulation=True)
    policy = parse_release_policy(name, text)
    spec = parse_spec(tomllib.loads(layout.spec_toml))
    wanted = {f.secret for f in spec.files}
    wanted |= {v.secret for v in spec.process.env.values() if not isinstance(v, str)}
    wanted |= {f"volume.{v.name}" for v in spec.volumes}
    assert set(policy.release.secrets) == wanted
    assert policy.policy.signer == SIGNER and policy.policy.product_id == layout.product_id
    assert policy.policy.measurements == [MEASUREMENT]
    assert policy.policy.allow_simulation is True
    assert "SIMULATION" in text and "demo only" in text


def test_a_policy_without_simulation_lists_hardware_and_refuses_sim() -> None:
    layout = get_recipe("redis").render(get_recipe("redis").defaults())
    text = policy_toml(layout, measurement=None, signer=SIGNER, allow_simulation=False)
    policy = parse_release_policy("redis", text)
    assert policy.policy.allow_simulation is False
    assert "sim" not in (policy.policy.tees or [])


def test_an_unbuilt_policy_has_a_placeholder_the_kms_refuses() -> None:
    layout = get_recipe("nginx").render(get_recipe("nginx").defaults())
    text = policy_toml(layout, measurement=None, signer=None, allow_simulation=True)
    with pytest.raises(MalformedPolicy):
        parse_release_policy("nginx", text)


def test_parameters_override_defaults_and_reach_spec_config_and_secret_names() -> None:
    recipe = get_recipe("redis")
    values = resolve_params(recipe, ["port=16390", "name=cache2", "dns=cache.example"])
    layout = recipe.render(values)
    assert layout.ready_tcp == "127.0.0.1:16390"
    assert "port 16390" in next(f.text for f in layout.files if f.path.endswith(".conf"))
    assert [s.name for s in layout.secrets] == ["cache2-password", "cache2-tls"]
    assert layout.secrets[1].dns == ("cache.example",)
    assert layout.released_secrets()[-1] == "volume.cache2"


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_a_rollback_window_reaches_the_volume_of_every_entry_and_is_off_by_default(
    name: str,
) -> None:
    recipe = get_recipe(name)
    default = parse_spec(tomllib.loads(recipe.render(recipe.defaults()).spec_toml))
    assert [v.rollback_window_ms for v in default.volumes] == [0] * len(default.volumes)
    layout = recipe.render(resolve_params(recipe, ["rollback_window_ms=250"]))
    assert "rollback_window_ms = 250" in layout.spec_toml
    windowed = parse_spec(tomllib.loads(layout.spec_toml))
    assert windowed.volumes and {v.rollback_window_ms for v in windowed.volumes} == {250}


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("port=6379", "machine's own services"),
        ("port=5432", "machine's own services"),
        ("port=80", "1024 to 65535"),
        ("port=99999", "1024 to 65535"),
        ("port=16380", "both 16380"),  # the TLS port's default
        ("port=12x", "whole number"),
        ("name=Bad Name", "expected 1-32"),
        ("name=../x", "expected 1-32"),
        ("appendonly=maybe", "yes or no"),
        ("memory=lots", "512M or 2G"),
        ("dns=a b", "host names"),
        ("nosuch=1", "has no parameter"),
        ("port", "NAME=VALUE"),
    ],
)
def test_bad_parameters_are_refused_with_a_config_error(setting: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve_params(get_recipe("redis"), [setting])


def test_a_parameter_set_twice_and_an_unknown_entry_are_refused() -> None:
    with pytest.raises(ConfigError, match="more than once"):
        resolve_params(get_recipe("redis"), ["port=16390", "port=16391"])
    with pytest.raises(ConfigError, match="no entry 'oracle'"):
        get_recipe("oracle")


@given(st.text(max_size=80))
def test_any_parameter_text_is_a_typed_refusal_or_a_valid_spec(raw: str) -> None:
    recipe = get_recipe("mariadb")
    for param in recipe.params:
        try:
            value = check_value(param, raw)
        except ConfigError:
            continue
        values = recipe.defaults() | {param.name: value}
        try:
            resolve_params(recipe, [])  # defaults stay valid
            layout = recipe.render(values)
        except ConfigError:
            continue
        parse_spec(tomllib.loads(layout.spec_toml))


def test_the_cache_key_follows_the_package_set_and_mmdebstrap_is_pinned() -> None:
    keys = {cache_key(r) for r in RECIPES.values()}
    assert len(keys) == len(RECIPES)
    argv = mmdebstrap_argv(DebianRootfs(packages=("redis-server",)), Path("/x"))
    assert "--variant=essential" in argv and "bookworm" in argv
    assert "--dpkgopt=path-exclude=/usr/share/doc/*" in argv
    assert "--dpkgopt=path-exclude=/usr/share/locale/*" in argv
