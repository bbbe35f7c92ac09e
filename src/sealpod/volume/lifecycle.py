"""Creating and opening volumes: header, journal recovery, the rollback check, the session."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import resource
import time
from pathlib import Path

from sealpod.errors import ConfigError, RollbackDetected, VolumeError
from sealpod.volume import commit as cm
from sealpod.volume import format as fmt
from sealpod.volume.crypt import VolumeKeys
from sealpod.volume.freshness import Freshness
from sealpod.volume.namespace import Index
from sealpod.volume.store import HostFile, VolumeDir
from sealpod.volume.volume import DEFAULT_CACHE_BYTES, DEFAULT_DIRTY_BYTES, Volume


def create_volume(
    path: Path, key: bytes, *, counter: Freshness, uid: int | None = None, gid: int | None = None
) -> str:
    """Create an empty volume in ``path`` (created if missing, must not hold a volume).

    Returns the volume id (hex). The key is the key-encryption key material (32 bytes).

    Raises:
        ConfigError: the key is not 32 bytes.
        VolumeError: ``path`` already holds a volume or cannot be written.
    """
    volume_id = os.urandom(fmt.ID_SIZE)
    volume_key = os.urandom(32)
    index_id = os.urandom(fmt.ID_SIZE)
    slot = cm.new_header_slot(
        key, volume_id=volume_id, volume_key=volume_key, index_file_id=index_id, counter=1
    )
    keys = VolumeKeys(volume_key, volume_id)
    index = Index.empty(
        uid=os.getuid() if uid is None else uid,
        gid=os.getgid() if gid is None else gid,
        now_ns=time.time_ns(),
    )
    records = index.record_bytes(fmt.ROOT_INO)
    meta = keys.seal_meta(
        file_kind=fmt.FILE_KIND_INDEX,
        file_id=index_id,
        body=fmt.MetaBody(size=len(records), generation=1, path=b"", inline_data=records),
    )
    slot = cm.seal_header(keys, _replace_tag(slot, meta.tag))
    vdir = VolumeDir(path)
    try:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise VolumeError(f"cannot create a volume in {path}: {exc.strerror or exc}") from exc
        if vdir.has_header():
            raise VolumeError(f"{path} already holds a sealpod volume")
        vdir.make_files_dir()
        host = HostFile.open(vdir.host_path(index_id), create=True)
        try:
            host.write_slots(0, meta.to_bytes())
            host.sync()
        finally:
            host.close()
        vdir.sync_files_dir()
        vdir.create_layout(slot.to_bytes())
    finally:
        vdir.close()
    vid = volume_id.hex()
    counter.advance(vid, counter.get(vid), 1)
    return vid


def _replace_tag(slot: fmt.HeaderSlot, tag: bytes) -> fmt.HeaderSlot:
    return dataclasses.replace(slot, index_meta_tag=tag)


def open_volume(
    path: Path,
    key: bytes,
    *,
    counter: Freshness,
    readonly: bool = False,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    dirty_bytes: int = DEFAULT_DIRTY_BYTES,
    rollback_window: float = 0.0,
) -> Volume:
    """Open a volume, recovering an interrupted commit, and check it against ``counter``.

    ``rollback_window`` (seconds, default 0) lets commits return before ``counter`` records
    them: the store is caught up at most about that long after the first commit it lacks (see
    :meth:`Volume.catch_up_counter`), so a host that restores an older copy can undo at most
    that window of synced writes undetected. 0 keeps every commit waiting for the store.

    A writable open takes an exclusive lock on the volume and starts a session by advancing the
    counter by two (so a commit that was in flight when the last session crashed can never be
    confused with a later one).

    Raises:
        VolumeFormatError: ``path`` is not a volume or has an unsupported format version.
        VolumeCorrupt: wrong key, or the header, journal or index fails authentication.
        RollbackDetected: the volume is older than ``counter`` says (an old copy was restored).
        VolumeError: the volume is in use by another process.
        ConfigError: ``rollback_window`` is out of range (0 to 60 s).
    """
    window = _check_window(rollback_window)
    _raise_fd_limit()
    vdir = VolumeDir(path)
    vdir.lock(exclusive=not readonly)
    try:
        header, volume_key = cm.read_header(vdir, key)
        overlay: dict[bytes, dict[int, bytes]] = {}
        cm.refuse_unfinished_v1_commit(vdir, header)
        records = cm.pending_records(vdir, header)
        vid = header.slot.volume_id.hex()
        stored = counter.get(vid)
        recovered = records[-1].counter if records else header.counter
        if recovered < stored:  # before anything is written: a refused open changes nothing
            raise RollbackDetected(
                f"volume counter is {recovered}, expected at least {stored} "
                "(an older copy of the volume was restored)"
            )
        if records and readonly:
            overlay = cm.journal_overlay(records)
            header = cm.carried_header(header, records)
        elif records:
            header = cm.replay_journal(vdir, header, records)
        if not readonly and header.slot.format_version < fmt.FORMAT_VERSION:
            header = cm.upgrade_header(vdir, header, key, volume_key)
        vol = Volume(
            vdir=vdir,
            header=header,
            volume_key=volume_key,
            freshness=counter,
            fresh_value=stored,
            readonly=readonly,
            overlay=overlay,
            cache_bytes=cache_bytes,
            dirty_bytes=dirty_bytes,
            rollback_window=window,
        )
        if not readonly:
            vol._start_session()  # part of opening
    except BaseException:
        vdir.close()
        raise
    return vol


MAX_ROLLBACK_WINDOW = 60.0


def _check_window(seconds: float) -> float:
    if not 0 <= seconds <= MAX_ROLLBACK_WINDOW:
        raise ConfigError(
            f"rollback window {seconds} s is out of range, expected 0 to {MAX_ROLLBACK_WINDOW:g}"
        )
    return seconds


def _raise_fd_limit() -> None:
    """Let a volume keep many files open: soft RLIMIT_NOFILE up to the hard limit (<= 65536)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard if hard != resource.RLIM_INFINITY else 65536, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
