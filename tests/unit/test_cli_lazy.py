"""``sealpod CMD`` registers only CMD's module (start latency of ``sealpod run``); the map from
command names to modules must match what each module really registers."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer.main

from conftest import modules_after
from sealpod.cli.main import MODULES, OWNERS, build_app, modules_for


def _top_level(app: typer.Typer) -> set[str]:
    return set(getattr(typer.main.get_command(app), "commands", {}))


@pytest.mark.parametrize("module", MODULES)
def test_each_module_registers_exactly_the_names_it_owns(module: str) -> None:
    owned = {name for name, owner in OWNERS.items() if owner == module}
    assert _top_level(build_app([module])) == owned


def test_the_whole_tree_is_every_owned_name() -> None:
    assert _top_level(build_app()) == set(OWNERS)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "b"], ("run",)),
        (["--debug", "kms", "status"], ("kms",)),
        (["verify-bundle", "x"], ("bundle",)),
        ([], MODULES),
        (["--help"], MODULES),
        (["no-such-command"], MODULES),
        (["--", "run"], MODULES),
    ],
)
def test_the_module_is_chosen_by_the_first_word(argv: list[str], expected: tuple[str, ...]) -> None:
    assert modules_for(argv) == expected


def test_a_run_start_loads_no_other_command_module() -> None:
    loaded = modules_after(
        "from sealpod.cli.main import build_app, modules_for\nbuild_app(modules_for(['run', 'b']))"
    )
    commands = sorted(m for m in loaded if m.startswith("sealpod.cli."))
    assert commands == ["sealpod.cli._common", "sealpod.cli.main", "sealpod.cli.run"]


def test_a_typo_is_refused_by_the_whole_tree() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sealpod.cli.main", "rnu"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "No such command" in result.stderr
