"""An output directory that must start empty and is cleaned up when the work fails.

Shared by image import (:mod:`sealpod.build.image`) and OCI export (:mod:`sealpod.build.oci`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sealpod.errors import ConfigError


def prepare_empty_dir(path: Path, what: str) -> bool:
    """Make sure ``path`` is an empty directory (creating it and its parents if needed).

    Returns True when this call created it, so :func:`discard_output` knows what to remove.

    Raises:
        ConfigError: ``path`` is a symlink, exists and is not a directory, or is not empty.
    """
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise ConfigError(f"{what} {path} exists and is not a directory")
    if path.exists():
        if any(path.iterdir()):
            raise ConfigError(f"{what} {path} is not empty")
        return False
    path.mkdir(parents=True)
    return True


def discard_output(path: Path, created: bool) -> None:
    """Remove a half-written output: the directory itself if we ``created`` it, else its
    contents, so that it cannot look like a result.

    Best effort: the error that ended the work matters more than leftovers we could not remove.

    Raises:
        Nothing.
    """
    try:
        if created:
            shutil.rmtree(path)
        else:
            for child in path.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    except OSError:
        pass
