"""The ``sealpod`` console script: a ``sealpod run`` goes to the running agent when there is
one (:mod:`sealpod.agent.client`, standard library only); everything else, and a run with no
agent, goes to :func:`sealpod.cli.main.main`, imported only then."""

from __future__ import annotations

import sys

from sealpod.agent.client import run_via_agent
from sealpod.errors import AgentError


def main() -> None:
    """Console entry point."""
    argv = sys.argv[1:]
    try:
        code = run_via_agent(argv)
    except AgentError as exc:
        from sealpod.cli.run import render_error

        render_error(exc, json_output="--json" in argv)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    if code is None:
        from sealpod.cli.main import main as cold

        cold()
    sys.exit(code)
