"""Phase *volumes*: each ``[[volumes]]`` entry created on first start, checked for rollback
against the KMS's counter, and served decrypted by a FUSE process of its own.

Freshness: the volume's version counter lives in the KMS (``GET``/``POST
/v1/volumes/NAME/counter``, compare-and-swap, released only to a token that may read the
volume's key ``volume.NAME``), so a host that restores an old copy of the volume directory is
caught at the next start, and one that deletes it is caught too (the KMS still knows the
volume's id). The local counter files of ``sealpod volume`` are not used here.

Each volume is served by a forked process (pyfuse3 serves one mount per process) in the pod's
private mount namespace (:mod:`sealpod.runtime.staging`), in its own process group so that a
Ctrl-C meant for the workload does not unmount its data under it; it dies with the supervisor
(``PR_SET_PDEATHSIG``), committing on the way out. The supervisor unmounts every volume after
the workload has exited.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import signal
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from sealpod.errors import (
    AttestationRefused,
    KmsAuthError,
    KmsUnavailable,
    RollbackDetected,
    SealpodError,
    VolumeError,
)
from sealpod.kms.client import AttestedSession, KmsClient
from sealpod.kms.freshness import KmsVolumeFreshness
from sealpod.retry import RetryPolicy
from sealpod.runtime.kms import KmsTarget, pinned_context, while_unreachable
from sealpod.runtime.plan import VolumeMount
from sealpod.tee.base import TeeBackend

#: Re-attest when the token has less than this left (a long-running pod's commits outlive it).
TOKEN_MARGIN_SECS = 30
READY_TIMEOUT_SECS = 60.0
_PR_SET_PDEATHSIG = 1
T = TypeVar("T")
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


#: An unreachable KMS during a commit: the commit waits, briefly.
COUNTER_RETRY = RetryPolicy(attempts=4, base_delay=0.1, max_delay=2.0, jitter=0.1)


@dataclass(slots=True, kw_only=True)
class KmsCounters:
    """The attested connection that volume counters go through, kept usable for the life of a
    pod: a forked FUSE server opens its own connection (a forked process must not share the
    parent's), and a token about to expire is replaced by attesting again."""

    target: KmsTarget
    backend: TeeBackend
    measurement: bytes
    evidence_tee: str
    session: AttestedSession
    clock: Callable[[], float] = time.time
    #: The attestation's own connection, reused by this process (no second TLS handshake);
    #: a forked server opens its own.
    client: KmsClient | None = field(default=None, repr=False)
    _pid: int = field(default_factory=os.getpid, repr=False)

    def refresh(self, *, reattest: bool = False) -> tuple[KmsClient, AttestedSession]:
        """A connection of this process and a live session (attested again when ``reattest``:
        a policy change revokes the tokens issued under it at once).

        Raises:
            KmsError, TeeError: connecting or attesting again failed.
        """
        if self.client is None or self._pid != os.getpid():
            verify = (
                pinned_context(self.target.url, self.target.identity)
                if self.target.identity is not None
                else (self.target.ca or True)
            )
            self.client = KmsClient(self.target.url, verify=verify)
            self._pid = os.getpid()
        if reattest or self.session.expires_at_unix - TOKEN_MARGIN_SECS <= self.clock():
            self.session = self.client.attest(self.backend, self.measurement, tee=self.evidence_tee)
        return self.client, self.session

    def current(self, name: str) -> tuple[str | None, int]:
        """(volume id, counter) the KMS holds for volume ``name``.

        Raises:
            KmsError: unreachable after retries, or refused.
        """

        def read() -> tuple[str | None, int]:
            client, session = self.refresh()
            held = client.volume_counter(session, name)
            return held.volume_id, held.counter

        return while_unreachable(read, policy=COUNTER_RETRY)


class RenewingFreshness(KmsVolumeFreshness):
    """:class:`~sealpod.kms.freshness.KmsVolumeFreshness` through :class:`KmsCounters`: the
    same checks, on a connection and token that outlive the first attestation."""

    def __init__(self, counters: KmsCounters, name: str) -> None:
        client, session = counters.refresh()
        super().__init__(client, session, name)
        self.counters = counters

    def get(self, volume_id: str) -> int:
        return self._call(lambda: super(RenewingFreshness, self).get(volume_id))

    def advance(self, volume_id: str, expected_old: int, new: int) -> None:
        unanswered = False

        def swap() -> None:
            nonlocal unanswered
            try:
                super(RenewingFreshness, self).advance(volume_id, expected_old, new)
            except KmsUnavailable:
                unanswered = True  # the swap may have been applied, its answer lost
                raise
            except RollbackDetected:
                # Only after a lost answer: the KMS holding exactly our new value means our
                # own earlier attempt went through. Another writer's swap never leaves it there
                # for us to see, since it would have needed the same expected value and lost.
                if unanswered and self.counters.current(self.name) == (volume_id, new):
                    return
                raise

        self._call(swap)

    def _call(self, call: Callable[[], T]) -> T:
        """``call`` on a live session; a refused token (its policy changed since) is replaced
        by attesting again once, and an unreachable KMS is retried briefly."""

        def attempt() -> T:
            self.client, self.session = self.counters.refresh()
            try:
                return call()
            except (KmsAuthError, AttestationRefused):
                self.client, self.session = self.counters.refresh(reattest=True)
                return call()

        return while_unreachable(attempt, policy=COUNTER_RETRY)


def check_presence(name: str, has_volume: bool, held_id: str | None, held_counter: int) -> bool:
    """Whether volume ``name`` must be created (True) or opened (False).

    Raises:
        RollbackDetected: the host has no volume, but the KMS knows one: it was deleted or
            moved away, and starting empty would silently roll the pod's data back to nothing.
    """
    if has_volume:
        return False
    if held_id is not None:
        raise RollbackDetected(
            f"volume {name}: the KMS knows volume {held_id} at counter {held_counter}, but the"
            " host has no copy of it (deleted or moved); refusing to start with an empty one"
        )
    return True


@dataclass(slots=True)
class ServedVolume:
    mount: VolumeMount
    mountpoint: Path
    pid: int


def prepare_directory(volume_dir: Path, name: str) -> Path:
    """``volume_dir/name``, the volume's host directory (ciphertext only), made private.

    The volume is served by root: a directory that another user owns or can write would let
    that user plant symlinks (``journal -> /etc/shadow``) that root then writes through, so
    both ``volume_dir`` and the volume's own directory must belong to this user and be
    writable by no one else, and the volume's directory must not be a symlink.

    Raises:
        VolumeError: the directory cannot be made, is a symlink or not a directory, or another
            user owns it or may write to it.
    """
    try:
        volume_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _check_private(volume_dir, os.stat(volume_dir))
    except OSError as exc:
        raise VolumeError(f"cannot create the volume directory {volume_dir}: {exc}") from exc
    path = volume_dir / name
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return path
    except OSError as exc:
        raise VolumeError(f"cannot inspect the volume directory {path}: {exc}") from exc
    if stat.S_ISLNK(info.st_mode):
        raise VolumeError(f"volume directory {path} is a symlink; refusing to follow it")
    _check_private(path, info)
    return path


def _check_private(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISDIR(info.st_mode):
        raise VolumeError(f"volume directory {path} is not a directory")
    if info.st_uid != os.geteuid():
        raise VolumeError(
            f"volume directory {path} is owned by uid {info.st_uid}, not by this user"
            f" (uid {os.geteuid()}); refusing a directory another user can change"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise VolumeError(
            f"volume directory {path} is writable by other users (mode"
            f" {stat.S_IMODE(info.st_mode):04o}); run: chmod go-w {path}"
        )


def serve(
    mount: VolumeMount,
    *,
    path: Path,
    key: bytes,
    freshness: RenewingFreshness,
    create: bool,
    mountpoint: Path,
    uid: int,
    gid: int,
) -> ServedVolume:
    """Create (first start) or open the volume, check it against the KMS counter, and serve it
    at ``mountpoint`` from a forked process; returns once the mount answers.

    Raises:
        RollbackDetected: an older (or another) copy of the volume than the KMS knows.
        VolumeCorrupt: wrong key or tampered ciphertext.
        VolumeError: FUSE unavailable, or the server died before mounting.
    """
    from sealpod.volume import fuse

    reason = fuse.unavailable_reason()
    if reason is not None:
        raise VolumeError(f"volume {mount.name} cannot be mounted: {reason}")
    mountpoint.mkdir(mode=0o755, exist_ok=True)
    read_fd, write_fd = os.pipe()
    supervisor = os.getpid()
    pid = os.fork()
    if pid == 0:  # the FUSE server
        os.close(read_fd)
        _server_main(
            mount, path, key, freshness, create, mountpoint, uid, gid, write_fd, supervisor
        )
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as status:
        message = _read_status(status)
    if message.get("ok") is True:
        return ServedVolume(mount=mount, mountpoint=mountpoint, pid=pid)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    raise _error_from(message, mount.name)


def _read_status(status: object) -> dict[str, object]:
    raw = status.read(65536) if hasattr(status, "read") else b""
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _error_from(message: dict[str, object], name: str) -> SealpodError:
    code = str(message.get("code", ""))
    text = str(message.get("message", f"the server of volume {name} died before mounting"))
    for cls in _error_classes(SealpodError):
        if cls.code == code:
            return cls(text)
    return VolumeError(text)


def _error_classes(root: type[SealpodError]) -> list[type[SealpodError]]:
    out = [root]
    for sub in root.__subclasses__():
        out.extend(_error_classes(sub))
    return out


def _server_main(
    mount: VolumeMount,
    path: Path,
    key: bytes,
    freshness: RenewingFreshness,
    create: bool,
    mountpoint: Path,
    uid: int,
    gid: int,
    status_fd: int,
    supervisor: int,
) -> None:
    """The forked FUSE server. Never returns."""
    code = 1
    try:
        os.setpgid(0, 0)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != supervisor:  # it died before the line above took effect
            raise VolumeError("the supervisor is gone")
        from sealpod.volume import create_volume, open_volume
        from sealpod.volume.fuse import mount as fuse_mount

        if create:
            create_volume(path, key, counter=freshness, uid=uid, gid=gid)
        volume = open_volume(
            path, key, counter=freshness, rollback_window=mount.rollback_window_ms / 1000
        )

        def ready() -> None:
            os.write(status_fd, b'{"ok": true}')
            os.close(status_fd)

        fuse_mount(volume, mountpoint, ready=ready, allow_other=True)
        code = 0
    except SealpodError as exc:
        with contextlib.suppress(OSError):
            os.write(status_fd, json.dumps({"code": exc.code, "message": exc.message}).encode())
    except BaseException as exc:  # the supervisor reports it; no traceback with secrets
        with contextlib.suppress(OSError):
            body = {"code": "volume", "message": f"volume server failed: {type(exc).__name__}"}
            os.write(status_fd, json.dumps(body).encode())
        code = 70
    finally:
        os._exit(code)


def stop(served: ServedVolume, *, timeout_secs: float = 60.0) -> None:
    """Unmount (the server commits and exits) and reap the server.

    Raises:
        VolumeError: the unmount failed; the server is then told to stop (it commits on
            SIGTERM) and reaped.
    """
    from sealpod.volume import fuse

    error: VolumeError | None = None
    try:
        fuse.unmount(served.mountpoint, timeout_secs=timeout_secs)
    except VolumeError as exc:
        error = exc
        with contextlib.suppress(ProcessLookupError):
            os.kill(served.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_secs
    while True:
        try:
            done, _ = os.waitpid(served.pid, os.WNOHANG)
        except ChildProcessError:
            break
        if done:
            break
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(served.pid, signal.SIGKILL)
            os.waitpid(served.pid, 0)
            break
        time.sleep(0.02)
    if error is not None:
        raise error
