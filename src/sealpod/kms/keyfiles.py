"""Key and share files around a database change (rekey, recovery keys), so that no crash and no
concurrent run loses a key the database is under.

The order is always: claim the output files (exclusively, so a concurrent run can neither
share nor remove them), store the key or shares durably (fsync, then the directory), commit,
and only then touch what the commit made obsolete. A key file is replaced in place through a
staged ``F.new`` renamed over ``F`` after the commit; :func:`finish_interrupted` completes a
rename a crash cut off. :func:`db_under` tells, after a failure, whether the commit happened.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from sealpod.errors import ConfigError
from sealpod.kms.keys import MasterKey, load_master_key_file
from sealpod.kms.settings import kms_home
from sealpod.kms.shamir import Share
from sealpod.kms.state import SealState
from sealpod.kms.store import Store


def fsync_dir(directory: Path) -> None:
    """Make the directory's entries (a new or renamed file) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def staged_path(key_file: Path) -> Path:
    """Where an in-place rekey stages the new key before its commit."""
    return key_file.with_name(key_file.name + ".new")


def claim_private(path: Path) -> None:
    """Create ``path`` empty (0600), refusing one that exists: what a run creates this way is
    its own, so only it ever fills or removes it.

    Raises:
        ConfigError: it exists or cannot be created.
    """
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except FileExistsError as exc:
        raise ConfigError(f"{path} already exists; refusing to overwrite it") from exc
    except OSError as exc:
        raise ConfigError(f"cannot create {path}: {exc.strerror}") from exc


def share_path(shares_dir: Path, prefix: str, index: int) -> Path:
    return shares_dir / f"{prefix}-{index}.txt"


def claim_share_files(shares_dir: Path, count: int, prefix: str) -> list[Path]:
    """Create ``DIR/PREFIX-1.txt`` … empty before the commit (all or none).

    Raises:
        ConfigError: the directory cannot be made, or a share file exists.
    """
    created: list[Path] = []
    try:
        try:
            shares_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(f"cannot create {shares_dir}: {exc.strerror}") from exc
        for index in range(1, count + 1):
            path = share_path(shares_dir, prefix, index)
            claim_private(path)
            created.append(path)
    except BaseException:
        for path in created:
            path.unlink(missing_ok=True)
        raise
    return created


def write_shares(shares_dir: Path, prefix: str, parts: Sequence[Share]) -> None:
    """Fill the claimed share files and make them durable (inside the transaction, before the
    commit: an error here rolls the change back).

    Raises:
        ConfigError: a share could not be written; nothing was changed.
    """
    try:
        for share in parts:
            fd = os.open(
                share_path(shares_dir, prefix, share.index),
                os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
            )
            try:
                os.write(fd, (share.to_text() + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(shares_dir)
    except OSError as exc:
        raise ConfigError(
            f"the new shares could not be stored ({exc.strerror or exc}); nothing was changed"
        ) from exc


def db_under(store: Store, key: MasterKey) -> bool | None:
    """Whether the database is under ``key``: True, False, or None when it does not answer."""
    try:
        SealState(store).check_key(key)
    except ConfigError:
        return False
    except Exception:  # no answer: unknown, so keep every file that might hold the key
        return None
    return True


def replace_key_file(staged: Path, key_file: Path) -> None:
    """After the commit: the staged key takes the key file's place (atomically, durably).

    Raises:
        ConfigError: the rename failed; the message says where the key is.
    """
    try:
        os.replace(staged, key_file)
        fsync_dir(key_file.parent)
    except OSError as exc:
        raise ConfigError(
            f"the database is now under the key in {staged}, which could not replace "
            f"{key_file} ({exc.strerror}): move it there, or run `sealpod kms rekey` again"
        ) from exc
    load_master_key_file(key_file)  # what is there now must read back


def finish_interrupted(store: Store, key_file: Path) -> MasterKey | None:
    """A staged ``F.new`` exists (a crash cut a rekey short): if the database is under it,
    finish the rename and return its key; else it was never committed, and it is removed.
    Call it only while holding :func:`key_file_lock`."""
    staged = staged_path(key_file)
    if not staged.exists():
        return None
    try:
        staged_key = load_master_key_file(staged)
        SealState(store).check_key(staged_key)
    except ConfigError:
        staged.unlink()  # left by a rekey that never committed: the database is not under it
        return None
    replace_key_file(staged, key_file)
    return staged_key


@contextlib.contextmanager
def key_file_lock(
    key_file: Path | None, *, on_wait: Callable[[], None] | None = None
) -> Iterator[None]:
    """An exclusive lock on ``F.lock`` beside the key file for a whole rekey, so a second rekey
    of that key file waits instead of taking the first one's staged key for a stale one. In a
    read-only key directory (a mounted secret) nothing can be staged either, and a lock under
    ``$SEALPOD_HOME`` named after the key file's real path serves. The kernel drops the lock
    if the process dies. Without a key file nothing is staged: no lock.

    Raises:
        ConfigError: no lock file can be created.
    """
    if key_file is None:
        yield
        return
    lock = key_file.with_name(key_file.name + ".lock")
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        digest = hashlib.sha256(str(key_file.resolve()).encode()).hexdigest()[:16]
        lock = kms_home() / f"rekey-{digest}.lock"
        try:
            lock.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot create a lock file for {key_file}: {exc.strerror}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
