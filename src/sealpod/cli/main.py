"""The ``sealpod`` command: one root app, command groups registered by their modules.

Typer turns every registered command into a click command before it dispatches, and each
command module imports what its commands use. For the whole tree that costs about half a
second, which ``sealpod run`` would pay on every container start. So :func:`main` registers
only the module that owns the command named on the line (:data:`OWNERS`), and the whole tree
when none is named (``sealpod --help``, a typo). The commands are the same objects either way:
one code path, fewer of them loaded. ``app`` (tests, docs) is the whole tree, built on first use.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer

# Pydantic plugins (installed packages that declare the entry point) see every value a model
# validates: the KMS's admin requests and the runtime's released secrets among them. sealpod
# loads none unless the user asks (PYDANTIC_DISABLE_PLUGINS= empty); it also spares each start
# the entry-point scan. Set before any model is built.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

from sealpod import __version__
from sealpod.cli import _common
from sealpod.errors import SealpodError

#: Top-level command or group name -> the module of sealpod.cli that registers it. A test
#: registers each module alone and checks that it adds exactly these names.
OWNERS: dict[str, str] = {
    "init": "bundle", "keygen": "bundle", "build": "bundle", "inspect": "bundle",
    "verify-bundle": "bundle", "verify": "verify", "tee": "tee", "sim": "tee", "attest": "tee",
    "verify-local": "tee", "kms": "kms", "volume": "volume", "run": "run",
    "gramine": "gramine", "ratls": "ratls", "image": "image", "kube": "kube",
    "catalog": "catalog", "agent": "agent",
}  # fmt: skip
#: The order in which ``sealpod --help`` lists the groups.
MODULES = ("bundle", "verify", "tee", "kms", "volume", "run", "agent", "gramine", "ratls", "image",
           "kube", "catalog")  # fmt: skip


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sealpod {__version__}")
        raise typer.Exit(0)


def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print version.")
    ] = False,
) -> None:
    _common.STATE["debug"] = debug


def build_app(modules: Sequence[str] = MODULES) -> typer.Typer:
    """The root app with the commands of ``modules`` (names in :data:`MODULES`)."""
    root = typer.Typer(
        name="sealpod",
        help="Confidential compute containers: build, sign, attest, provision and run sealed pods.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )
    root.callback()(_root)
    for name in modules:
        importlib.import_module(f"sealpod.cli.{name}").register(root)
    return root


def modules_for(argv: Sequence[str]) -> tuple[str, ...]:
    """The modules a command line needs: the owner of its first word that is not a root
    option, or all of them."""
    for word in argv:
        if not word.startswith("-"):
            owner = OWNERS.get(word)
            return (owner,) if owner is not None else MODULES
        if word == "--":
            break
    return MODULES


def __getattr__(name: str) -> Any:
    if name == "app":  # the whole tree, for tests and tools that walk it
        globals()["app"] = built = build_app()
        return built
    raise AttributeError(name)


def run_cli(argv: Sequence[str], command: Callable[..., Any] | None = None) -> int:
    """Run ``sealpod <argv>``; its exit status. Never shows a traceback unless ``--debug``.

    ``command``: the click command to dispatch to, already built (the agent builds ``run``'s
    once); by default the root app with the modules :func:`modules_for` names.

    Click runs in non-standalone mode so that a usage error (an unknown option, a value not
    among an option's choices) is rendered by us: in ``--json`` mode as the same JSON error
    document every other refusal prints, exit 2 (the ``config`` family).
    """
    try:
        if command is None:
            command = typer.main.get_command(build_app(modules_for(argv)))
        code = command(args=list(argv), prog_name="sealpod", standalone_mode=False)
    except KeyboardInterrupt:
        _common.err.print("interrupted")
        return _common.EXIT_INTERRUPTED
    except Exception as exc:  # the last line of defence: no tracebacks for users
        if _common.is_usage_error(exc):
            _common.report_usage_error(exc, json_mode="--json" in argv)
            return int(getattr(exc, "exit_code", 2))
        if type(exc).__name__ == "Abort":  # click's: end of input at a prompt
            _common.err.print("aborted")
            return 1
        if _common.STATE["debug"]:
            traceback.print_exc()
            if isinstance(exc, SealpodError):  # re-raised for its traceback: still its code
                return exc.exit_code
        else:
            _common.err.print(
                f"internal error: {type(exc).__name__} (run 'sealpod --debug ...' for details)",
                markup=False,
            )
        return _common.EXIT_INTERNAL
    return code if isinstance(code, int) else 0


def agent_runner() -> Callable[[list[str]], int]:
    """What the agent's children run: :func:`run_cli` with ``sealpod run`` built, and every
    module a start imports loaded (:data:`sealpod.agent.preload.MODULES`), once, in the agent."""
    from sealpod.agent.preload import preload

    preload()
    command = typer.main.get_command(build_app(("run",)))

    def run(argv: list[str]) -> int:
        _common.reopen_consoles()
        return run_cli(argv, command)

    return run


def main() -> None:
    """Console entry point (``sealpod``)."""
    sys.exit(run_cli(sys.argv[1:]))


if __name__ == "__main__":
    main()
