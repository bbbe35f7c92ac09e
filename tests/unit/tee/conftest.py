"""Fixtures: one simulated platform per session (two RSA-4096 keys are slow), cloned per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from sealpod.settings import sealpod_home
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
