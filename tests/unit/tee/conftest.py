"""Fixtures: one simulated platform per session (two RSA-4096 keys are slow), cloned per test."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from sealpod.build.bundle import Bundle, build_bundle
from sealpod.build.keys import generate_key
from sealpod.settings import sealpod_home
from sealpod.spec.load import image_source, load_spec
from sealpod.spec.template import write_example
from sealpod.tee.sim import SimIdentity, SimPlatform
from sealpod.testing.sim_fakes import clone_platform


@pytest.fixture(scope="session")
def sim_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sealpod home holding an initialised simulated platform (never modified)."""
    home = tmp_path_factory.mktemp("sim-template")
    SimPlatform.init(home)
    return home


@pytest.fixture
def sim(sim_template: Path) -> SimPlatform:
    """A private copy of the template platform in this test's SEALPOD_HOME."""
    return clone_platform(sim_template, sealpod_home())


@pytest.fixture
def identity() -> SimIdentity:
    return SimIdentity(
        measurement=bytes.fromhex("11" * 32),
        signer=bytes.fromhex("22" * 32),
        product_id=7,
        svn=3,
        debug=False,
    )


def make_bundle(workdir: Path, *, svn: int = 1, greeting: str = "hello") -> Bundle:
    """Build the example pod (``sealpod init``'s) with the given svn and greeting."""
    workdir.mkdir(parents=True)
    write_example(workdir)
    spec_path = workdir / "sealpod.toml"
    spec_path.write_text(spec_path.read_text().replace("svn = 1", f"svn = {svn}"))
    conf = workdir / "rootfs" / "app" / "etc" / "greeting.conf"
    conf.write_text(conf.read_text().replace('GREETING="hello"', f'GREETING="{greeting}"'))
    spec = load_spec(spec_path)
    return build_bundle(
        spec,
        image=image_source(spec, spec_path),
        key=generate_key(),
        out=workdir / "bundle",
        signed_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return make_bundle(tmp_path_factory.mktemp("bundle-a") / "pod")


@pytest.fixture(scope="session")
def other_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """Same author key type and spec, another file content: another measurement."""
    return make_bundle(tmp_path_factory.mktemp("bundle-b") / "pod", svn=2, greeting="bonjour")
