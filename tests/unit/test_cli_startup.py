"""CLI startup stays cheap: registering commands imports no library they call.

Every ``sealpod`` invocation (even ``--version`` or ``--help``) imports the command modules, so
those import their libraries inside the command functions. This is a structural check of
``sys.modules`` in a fresh interpreter, not a timing test.
"""

from __future__ import annotations

import pytest

from conftest import modules_after
from sealpod.build.keys import KeyType
from sealpod.cli.bundle import KeyTypeName

LIGHT_COMMAND_MODULES = (
    "sealpod.cli.bundle",
    "sealpod.cli.verify",
    "sealpod.cli.tee",
    "sealpod.cli.volume",
    "sealpod.cli.kms",
    "sealpod.cli.kube",
    "sealpod.cli.image",
)

HEAVY = (
    "sealpod.deploy",
    "sealpod.rootfs",
    "yaml",
    "sealpod.kms",
    "sealpod.volume",
    "sealpod.build.bundle",
    "sealpod.build.keys",
    "sealpod.build.manifest",
    "sealpod.spec.model",
    "sealpod.collateral.models",
    "sealpod.evidence.dcap_quote",
    "sealpod.policy.model",
    "sealpod.verify.appraise",
    "sealpod.verify.dcap",
    "sealpod.tee.sim",
    "sealpod.tee.select",
    "sealpod.tee.tsm",
    "cryptography",
    "pydantic",
    "pydantic_settings",
    "fastapi",
    "sqlalchemy",
    "httpx",
    "rich.progress",
    "rich.table",
)


def _modules_after_import(*modules: str) -> set[str]:
    return modules_after("".join(f"import {name}\n" for name in modules))


def test_command_modules_import_no_library() -> None:
    loaded = _modules_after_import(*LIGHT_COMMAND_MODULES)
    assert set(LIGHT_COMMAND_MODULES) <= loaded
    leaked = sorted(
        name for name in loaded for heavy in HEAVY if name == heavy or name.startswith(heavy + ".")
    )
    assert leaked == [], f"imported at CLI startup: {leaked}"


@pytest.mark.parametrize("module", LIGHT_COMMAND_MODULES)
def test_command_module_imports_alone(module: str) -> None:
    """Each module still works on its own: nothing relies on another having imported a name."""
    assert module in _modules_after_import(module)


def test_key_type_choices_mirror_the_library() -> None:
    """``keygen --type`` lists the CLI's copy of the key types; it must equal the library's."""
    assert [(k.name, k.value) for k in KeyTypeName] == [(k.name, k.value) for k in KeyType]
