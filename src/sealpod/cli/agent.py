"""``sealpod agent``: serve warm pod starts, and say what the agent runs (docs/agent.md).

Rendering only: the agent lives in :mod:`sealpod.agent`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, cast

import typer

from sealpod.cli._common import JsonOption, command, emit_json, err, out

agent_app = typer.Typer(
    name="agent",
    help="A per-host process that starts pods warm: `sealpod run` uses it when it runs.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def register(app: typer.Typer) -> None:
    """Add ``sealpod agent`` to the root app."""
    app.add_typer(agent_app, name="agent")


@command(agent_app, "serve")
def serve_cmd(
    grace: Annotated[
        float,
        typer.Option(
            "--grace",
            min=0.0,
            help="Seconds a pod has to stop after SIGTERM (its client gone, the agent stopping)"
            " before its process group is killed.",
        ),
    ] = 10.0,
    max_pods: Annotated[
        int, typer.Option("--max-pods", min=1, help="Pods run at once; more are refused.")
    ] = 64,
) -> None:
    """Serve $SEALPOD_HOME/run/agent.sock in the foreground until SIGTERM, SIGINT or SIGHUP,
    then stop every pod. Each `sealpod run` of this user and home is forked from it: the same
    code, without the interpreter start and imports."""
    from sealpod.agent.server import Agent
    from sealpod.cli.main import agent_runner
    from sealpod.runtime.memory import harden_process
    from sealpod.settings import sealpod_home

    # Every pod is forked from this process: no ptrace, no core dumps, for its whole life.
    harden_process()
    agent = Agent(
        home=sealpod_home(create=True),
        runner=agent_runner(),
        log=lambda line: err.print(f"sealpod agent: {line}", markup=False),
        grace_secs=grace,
        max_pods=max_pods,
    )
    agent.serve()


@command(agent_app, "status")
def status_cmd(json_output: JsonOption = False) -> None:
    """The running agent of this home and its pods (exit 14 when none runs)."""
    from sealpod.agent.client import agent_status

    status = agent_status()
    if json_output:
        emit_json({"ok": True, **status})
        return
    pods = cast(list[dict[str, Any]], status["pods"])  # its shape is checked by the client
    out.print(
        f"agent pid {status['pid']}, sealpod {status['version']}, {len(pods)} pod(s),"
        f" socket {status['socket']}",
        markup=False,
    )
    for pod in pods:
        started = datetime.fromtimestamp(pod["started"], UTC)
        argv = " ".join(pod["argv"])
        out.print(f"  {pod['pid']}  since {started:%Y-%m-%dT%H:%M:%SZ}  {argv}", markup=False)
