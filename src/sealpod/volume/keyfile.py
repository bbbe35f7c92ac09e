"""Volume key files: 32 random bytes, stored as 64 hex digits (or raw), mode 0600.

In production the runtime receives volume keys from the KMS and passes them to
:func:`sealpod.volume.open_volume` directly; key files are for development, tests, migration and
operators who hold keys themselves.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sealpod.errors import ConfigError

KEY_SIZE = 32


def load_key_file(path: Path) -> bytes:
    """Read a volume key file.

    Raises:
        ConfigError: missing, readable by group or others, or not 32 bytes (raw or hex).
    """
    try:
        st = path.stat()
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"key file {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"key file {path} is not a regular file")
    if st.st_mode & 0o077:
        raise ConfigError(
            f"key file {path} has mode {stat.S_IMODE(st.st_mode):04o}, expected 0600 or stricter"
        )
    if len(data) == KEY_SIZE:
        return data
    text = data.strip()
    if len(text) == 2 * KEY_SIZE:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    raise ConfigError(
        f"key file {path} holds {len(data)} bytes, expected 32 raw bytes or 64 hex digits"
    )


def generate_key_file(path: Path) -> bytes:
    """Create ``path`` (mode 0600, must not exist) holding a fresh random key as hex.

    Raises:
        ConfigError: the file exists or cannot be written.
    """
    key = os.urandom(KEY_SIZE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError as exc:
        raise ConfigError(f"key file {path} already exists; refusing to overwrite it") from exc
    except OSError as exc:
        raise ConfigError(f"cannot create key file {path}: {exc.strerror or exc}") from exc
    try:
        os.write(fd, key.hex().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return key
