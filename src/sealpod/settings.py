"""Where sealpod keeps its state: ``SEALPOD_HOME`` (default ``~/.local/share/sealpod``).

All local state — author keys, caches, the simulated platform, the embedded KMS database —
lives under that one directory, so that tests and users can isolate it by pointing that one
variable elsewhere. One variable is read with ``os.environ``, not a settings model: every
``sealpod run`` start asks for it, and pydantic-settings costs ~30 ms to import (the KMS's own
configuration, many variables with types, does use it: :mod:`sealpod.kms.settings`).
"""

from __future__ import annotations

import os
from pathlib import Path

from sealpod._home import DEFAULT_HOME, HOME_ENV, raw_home
from sealpod.errors import ConfigError

__all__ = ["DEFAULT_HOME", "HOME_ENV", "sealpod_home"]


def sealpod_home(*, create: bool = False) -> Path:
    """The state directory (an empty ``SEALPOD_HOME`` means the default). With ``create``,
    make it (mode 0700) if missing.

    Raises:
        ConfigError: the path names a home directory that cannot be found (``~nosuchuser``, or
            the default under a user with no home and no ``$HOME``).
    """
    raw = raw_home()
    try:
        home = Path(raw).expanduser()
    except RuntimeError as exc:
        raise ConfigError(
            f"cannot find the home directory in {raw[:80]!r}: set ${HOME_ENV} to a directory"
        ) from exc
    if create:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(home, 0o700)
    return home
