"""The rollback window when the counter store fails with an error that is
not a VolumeError (the KMS store raises KmsError: KmsUnavailable, KmsAuthError, ...).

docs/runtime.md, "The rollback window": "If the KMS cannot be reached when the window runs out,
the volume stops taking requests (EIO), as a failed commit does" and "the last commit before an
unmount is always recorded" (and when it cannot be, `unmount` must say so: docs/volumes.md).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sealpod.catalog.model import resolve_params
from sealpod.catalog.recipes import get_recipe
from sealpod.errors import ConfigError, KmsUnavailable, SealpodError
from sealpod.volume import MemoryFreshness, Volume, create_volume, open_volume

from .conftest import Clock

fuse = pytest.importorskip("sealpod.volume.fuse")
trio = pytest.importorskip("trio")
pyfuse3 = pytest.importorskip("pyfuse3")


class KmsStore(MemoryFreshness):
    """A counter store that fails like RenewingFreshness does when the KMS is gone."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def advance(self, volume_id: str, expected_old: int, new: int) -> None:
        if self.down:
            raise KmsUnavailable("cannot reach the KMS: ConnectError")
        super().advance(volume_id, expected_old, new)


def _lagging(tmp_path: Path, window: float) -> tuple[KmsStore, Volume]:
    key, store = os.urandom(32), KmsStore()
    path = tmp_path / "vol"
    create_volume(path, key, counter=store)
    vol = open_volume(path, key, counter=store, rollback_window=window)
    vol.write_file("f", b"synced inside the window")
    vol.sync()
    assert vol.counter_lag == 1
    return store, vol


def test_an_unmount_that_cannot_record_the_window_is_reported_as_a_failure(
    tmp_path: Path, clock: Clock
) -> None:
    """The final record at unmount fails (KMS down): the mount's status must say so, so that
    `unmount` (and `sealpod run`'s stop) does not report a clean unmount."""
    store, vol = _lagging(tmp_path, window=10)
    store.down = True
    status = tmp_path / "status"
    status.write_text(fuse.RUNNING)
    with pytest.raises(SealpodError):
        fuse._close_and_record(vol, status)
    assert status.exists(), "the failed final record was reported as a clean unmount"
    text = status.read_text()
    assert "failed" in text and "the data is on disk" in text and "are lost" not in text
    assert vol.broken and vol.unrecorded


def test_the_catch_up_timer_survives_a_kms_error_and_leaves_the_volume_broken(
    tmp_path: Path,
) -> None:
    """The timer must end quietly (the volume broken, requests EIO), not crash the server."""
    store, vol = _lagging(tmp_path, window=0.04)
    store.down = True
    try:

        async def main() -> None:
            with trio.fail_after(10):
                await fuse._counter_catch_up(vol)

        trio.run(main)  # before the fix: KmsUnavailable escapes and ends the serving loop
        assert vol.broken
    finally:
        vol.close()


def test_an_fsync_whose_record_fails_with_a_kms_error_answers_eio(
    tmp_path: Path, clock: Clock
) -> None:
    """Half a window after the first unrecorded commit, an fsync records; a KMS error there
    must be EIO (docs), not an exception that ends the FUSE server."""
    store, vol = _lagging(tmp_path, window=0.25)
    ops = fuse.VolumeOperations(vol)
    try:
        clock.now += 0.125
        vol.write_file("f", b"second")
        store.down = True
        with pytest.raises(pyfuse3.FUSEError) as info:
            trio.run(ops.fsync, 0, False)
        assert info.value.errno == errno.EIO
        assert vol.broken
    finally:
        vol.close()


_SERVER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from sealpod.errors import KmsUnavailable
    from sealpod.volume import MemoryFreshness, create_volume, open_volume
    from sealpod.volume.fuse import mount

    vol_dir, point, flag = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])

    class Flaky(MemoryFreshness):
        def advance(self, volume_id, expected_old, new):
            if flag.exists():
                raise KmsUnavailable("cannot reach the KMS: ConnectError")
            super().advance(volume_id, expected_old, new)

    key, store = os.urandom(32), Flaky()
    create_volume(vol_dir, key, counter=store)
    mount(open_volume(vol_dir, key, counter=store, rollback_window=0.4), point,
          commit_interval=60)
    """
)


@pytest.mark.fuse
@pytest.mark.skipif(
    fuse.unavailable_reason() is not None or not os.access("/dev/fuse", os.R_OK | os.W_OK),
    reason="FUSE unavailable",
)
def test_a_mounted_volume_whose_kms_goes_away_answers_eio_instead_of_vanishing(
    tmp_path: Path,
) -> None:
    point, flag = tmp_path / "mnt", tmp_path / "kms-down"
    point.mkdir()
    env = {**os.environ, "SEALPOD_HOME": str(tmp_path / "home")}
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER, str(tmp_path / "vol"), str(point), str(flag)],
            stdout=subprocess.DEVNULL, stderr=out, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not os.path.ismount(point):
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline
            time.sleep(0.02)
        fd = os.open(point / "f", os.O_CREAT | os.O_WRONLY, 0o600)
        os.write(fd, b"synced inside the window")
        os.fsync(fd)
        os.close(fd)
        flag.touch()  # the KMS is gone before the timer records the commit
        time.sleep(1.5)
        with pytest.raises(OSError) as info:
            os.stat(point / "f")
        assert info.value.errno == errno.EIO, (
            f"got {errno.errorcode.get(info.value.errno or 0)}; server exit {proc.poll()}: "
            + log.read_text(errors="replace")[-600:]
        )
        assert proc.poll() is None, "the server died instead of answering EIO"
    finally:
        # Not only when ismount() says so: a dead server's mount (ENOTCONN) reads as not
        # mounted, and left behind it breaks pytest's own clean-up of its temporary directories.
        if subprocess.run(["fusermount3", "-u", str(point)], capture_output=True).returncode:
            subprocess.run(["fusermount3", "-uz", str(point)], capture_output=True)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("value", ["60001", "65535"])
def test_the_catalog_refuses_a_window_the_spec_refuses(value: str) -> None:
    with pytest.raises(ConfigError, match="rollback_window_ms"):
        resolve_params(get_recipe("redis"), [f"rollback_window_ms={value}"])
