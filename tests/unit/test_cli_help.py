"""Every option of every command says what it does, and a choice lists its choices in help.

Walks the click command tree behind ``sealpod`` (issue 16, item 4): an option without help
text, or a choice-like option (``--tee``, ``--emulate``, ``--log-format``...) typed as a bare
string, fails here with the command and option named. Typer ships its own copy of click, so the
tree is walked by duck typing (``commands``, ``choices``), not by ``isinstance``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer.main

from sealpod.cli.main import app

#: Options whose values form a fixed set: each must be a click Choice (help then lists it).
CHOICE_OPTIONS = {"--tee", "--emulate", "--log-format", "--log-level", "--role"}
#: The project's vocabulary for --tee, the same on every command.
TEE_VALUES = ["auto", "sim", "sgx", "snp", "tdx"]


def _commands() -> Iterator[tuple[str, Any]]:
    def walk(prefix: str, cmd: Any) -> Iterator[tuple[str, Any]]:
        yield prefix, cmd
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            yield from walk(f"{prefix} {name}", sub)

    yield from walk("sealpod", typer.main.get_command(app))


def _is_group(cmd: Any) -> bool:
    return hasattr(cmd, "commands")


def _options(cmd: Any) -> list[Any]:
    return [p for p in cmd.params if p.param_type_name == "option"]


COMMANDS = dict(_commands())


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_option_has_help(path: str) -> None:
    cmd = COMMANDS[path]
    missing = [p.opts[0] for p in _options(cmd) if not p.hidden and not (p.help or "").strip()]
    assert not missing, f"{path}: options without help text: {missing}"
    if not _is_group(cmd) or path == "sealpod":
        assert (cmd.help or "").strip(), f"{path} has no help text"


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_choice_options_list_their_choices(path: str) -> None:
    cmd = COMMANDS[path]
    ctx = cmd.make_context(path, ["--help"], resilient_parsing=True)
    for param in _options(cmd):
        if param.opts[0] not in CHOICE_OPTIONS:
            continue
        record = param.get_help_record(ctx)
        assert record is not None
        assert "|" in record[0], f"{path} {param.opts[0]} does not list its choices: {record[0]}"
        if param.opts[0] == "--tee":  # the vocabulary, or a part of it (kube pod: no auto)
            shown = record[0].split("<", 1)[1].split(">", 1)[0].split("|")
            assert set(shown) <= set(TEE_VALUES), f"{path}: {record[0]}"


def test_commands_that_report_have_json() -> None:
    # Commands that only start a process or print help have no report to give.
    exempt = {"sealpod kms serve", "sealpod volume serve", "sealpod agent serve"}
    missing = [
        path
        for path, cmd in COMMANDS.items()
        if not _is_group(cmd)
        and path not in exempt
        and "--json" not in {o for p in cmd.params for o in p.opts}
    ]
    assert not missing, f"commands without --json: {missing}"
