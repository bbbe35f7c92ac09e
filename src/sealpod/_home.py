"""Where ``SEALPOD_HOME`` points, computed with the standard library alone: the agent's client
runs this on every ``sealpod run`` before it imports anything else (:mod:`sealpod.settings`
is the API; it builds on these)."""

from __future__ import annotations

import os
from collections.abc import Mapping

HOME_ENV = "SEALPOD_HOME"
DEFAULT_HOME = "~/.local/share/sealpod"


def raw_home(environ: Mapping[str, str] = os.environ) -> str:
    """The state directory as written (an empty ``SEALPOD_HOME`` means the default)."""
    return environ.get(HOME_ENV) or DEFAULT_HOME
