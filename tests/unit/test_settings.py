"""``SEALPOD_HOME``: the state directory, read from the environment on each call."""

from __future__ import annotations

from pathlib import Path

import pytest

from sealpod.errors import ConfigError
from sealpod.settings import DEFAULT_HOME, sealpod_home


def test_unset_or_empty_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEALPOD_HOME", raising=False)
    assert sealpod_home() == Path(DEFAULT_HOME).expanduser()
    monkeypatch.setenv("SEALPOD_HOME", "")
    assert sealpod_home() == Path(DEFAULT_HOME).expanduser()


def test_a_home_of_an_unknown_user_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Path.expanduser raises RuntimeError for "~nosuchuser": it reached the CLI as an internal
    # error (exit 70).
    monkeypatch.setenv("SEALPOD_HOME", "~no-such-user-sealpod/state")
    with pytest.raises(ConfigError, match="SEALPOD_HOME"):
        sealpod_home()


def test_no_home_directory_at_all_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # The default under a uid with no passwd entry and no $HOME (a container's random uid).
    monkeypatch.delenv("SEALPOD_HOME", raising=False)

    def no_home(self: Path) -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "expanduser", no_home)
    with pytest.raises(ConfigError, match="SEALPOD_HOME"):
        sealpod_home()
