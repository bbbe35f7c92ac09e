"""Process settings, read once from the environment (``SEALPOD_*``).

All local state — author keys, caches, the simulated platform, the embedded KMS database —
lives under ``SEALPOD_HOME`` (default ``~/.local/share/sealpod``), so that tests and users can
isolate it by pointing that one variable elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEALPOD_", extra="ignore", frozen=True)

    home: Path = Path("~/.local/share/sealpod")

    def resolved_home(self) -> Path:
        return self.home.expanduser()


def sealpod_home(*, create: bool = False) -> Path:
    """The state directory. With ``create``, make it (mode 0700) if missing."""
    home = Settings().resolved_home()
    if create:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(home, 0o700)
    return home
