"""The FUSE mount, as applications use it: POSIX file operations, mmap, fsync across a killed
daemon, tampering seen as EIO, and real databases (SQLite; Redis where the binary exists).

Every mount is served by ``sealpod volume mount --foreground`` in a child process and is
unmounted in teardown (lazily if the normal unmount fails) so no stale mount survives.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealpod.volume import LocalFreshness, create_volume
from sealpod.volume import format as fmt
from sealpod.volume.fuse import unavailable_reason

_reason = unavailable_reason()
if _reason is None and not os.access("/dev/fuse", os.R_OK | os.W_OK):
    _reason = "/dev/fuse is not accessible to this user"
pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(_reason is not None, reason=f"FUSE unavailable: {_reason}"),
]


class Mount:
    """A volume served by ``sealpod volume mount --foreground`` in a child process."""

    def __init__(self, tmp: Path) -> None:
        self.volume = tmp / "vol"
        self.point = tmp / "mnt"
        self.key_file = tmp / "key"
        self.counters = tmp / "counters"
        self.point.mkdir()
        self.key_file.write_text(os.urandom(32).hex())
        self.key_file.chmod(0o600)
        create_volume(
            self.volume, bytes.fromhex(self.key_file.read_text()),
            counter=LocalFreshness(self.counters),
        )  # fmt: skip
        self.log = tmp / "mount.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra_args: list[str] = []

    def start(self, *, expect_failure: bool = False) -> None:
        cmd = [
            sys.executable, "-m", "sealpod.cli.main", "volume", "mount", str(self.volume),
            str(self.point), "--key-file", str(self.key_file), "--counter-dir",
            str(self.counters), "--foreground", "--commit-interval", "1", *self.extra_args,
        ]  # fmt: skip
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 30
        while not os.path.ismount(self.point):
            if self.proc.poll() is not None:
                if expect_failure:
                    return
                raise AssertionError(f"mount failed: {self.log.read_text(errors='replace')}")
            assert time.monotonic() < deadline, "mount did not appear"
            time.sleep(0.02)
        assert not expect_failure, "mount unexpectedly succeeded"

    def stop(self) -> None:
        # Also when ismount() says no: a dead server's mount (ENOTCONN) reads as not mounted.
        done = subprocess.run(["fusermount3", "-u", str(self.point)], capture_output=True)
        if done.returncode != 0:
            subprocess.run(["fusermount3", "-uz", str(self.point)], capture_output=True)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def kill(self) -> None:
        """Crash the daemon (SIGKILL) and detach the dead mount."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None
        subprocess.run(["fusermount3", "-uz", str(self.point)], capture_output=True)

    def remount(self) -> None:
        self.stop()
        self.start()

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()


@pytest.fixture
def mnt(tmp_path: Path) -> Iterator[Mount]:
    m = Mount(tmp_path)
    m.start()
    try:
        yield m
    finally:
        m.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_posix_file_operations(mnt: Mount) -> None:
    root = mnt.point
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "dir" / "a.txt").write_bytes(b"alpha")
    os.symlink("a.txt", root / "dir" / "link")
    assert (root / "dir" / "link").read_bytes() == b"alpha"
    os.rename(root / "dir" / "a.txt", root / "dir" / "sub" / "b.txt")
    assert sorted(os.listdir(root / "dir")) == ["link", "sub"]
    with open(root / "f.bin", "w+b") as f:
        f.write(b"x" * 10_000)
        f.truncate(100)
        f.seek(0)
        assert f.read() == b"x" * 100
    with pytest.raises(OSError) as info:
        os.rmdir(root / "dir")
    assert info.value.errno == errno.ENOTEMPTY
    with pytest.raises(OSError) as info:
        os.link(root / "f.bin", root / "hard")
    assert info.value.errno == errno.EPERM
    os.chmod(root / "f.bin", 0o600)
    assert (root / "f.bin").stat().st_mode & 0o777 == 0o600
    mnt.remount()
    assert (root / "dir" / "sub" / "b.txt").read_bytes() == b"alpha"
    assert os.readlink(root / "dir" / "link") == "a.txt"
    assert (root / "f.bin").stat().st_size == 100
    assert (root / "f.bin").stat().st_mode & 0o777 == 0o600


def test_random_reads_and_writes_match_a_model(mnt: Mount) -> None:
    rng = random.Random(7)
    model = bytearray()
    path = mnt.point / "rand.bin"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        for _ in range(300):
            if rng.random() < 0.6:
                off = rng.randrange(2_000_000)
                data = rng.randbytes(rng.choice([1, 512, 4096, 70_000]))
                os.pwrite(fd, data, off)
                if off > len(model):
                    model.extend(bytes(off - len(model)))
                model[off : off + len(data)] = data
            elif rng.random() < 0.2:
                size = rng.randrange(2_000_000)
                os.ftruncate(fd, size)
                del model[size:]
                model.extend(bytes(size - len(model)))
            else:
                off = rng.randrange(len(model) + 1)
                assert os.pread(fd, 100_000, off) == bytes(model[off : off + 100_000])
        os.fsync(fd)
    finally:
        os.close(fd)
    mnt.remount()
    assert path.read_bytes() == bytes(model)


def test_large_file_and_many_files(mnt: Mount) -> None:
    block = os.urandom(128 * 1024)
    digest = hashlib.sha256()
    with open(mnt.point / "large", "wb") as f:
        for _ in range(512):  # 64 MiB
            f.write(block)
            digest.update(block)
        f.flush()
        os.fsync(f.fileno())
    (mnt.point / "many").mkdir()
    for n in range(400):
        (mnt.point / "many" / f"f{n:03d}").write_bytes(str(n).encode() * 10)
    mnt.remount()
    check = hashlib.sha256()
    with open(mnt.point / "large", "rb") as f:
        while chunk := f.read(1 << 20):
            check.update(chunk)
    assert check.digest() == digest.digest()
    assert len(os.listdir(mnt.point / "many")) == 400
    assert (mnt.point / "many" / "f399").read_bytes() == b"399" * 10


def test_mmap_shared_writes_go_through_the_page_cache(mnt: Mount) -> None:
    path = mnt.point / "mapped"
    with open(path, "wb") as w:
        w.truncate(1 << 20)
    with open(path, "r+b") as rw:
        with mmap.mmap(rw.fileno(), 1 << 20) as m:
            m[0:5] = b"hello"
            m[500_000:500_006] = b"middle"
            m.flush()
        os.fsync(rw.fileno())
    with open(path, "rb") as r, mmap.mmap(r.fileno(), 0, access=mmap.ACCESS_READ) as m:
        assert m[0:5] == b"hello"
    mnt.remount()
    data = path.read_bytes()
    assert data[0:5] == b"hello" and data[500_000:500_006] == b"middle"
    assert len(data) == 1 << 20


def test_unlinked_open_file_stays_readable(mnt: Mount) -> None:
    path = mnt.point / "tmp"
    path.write_bytes(b"still here")
    with open(path, "rb") as f:
        path.unlink()
        assert not path.exists()
        assert f.read() == b"still here"


def test_fsynced_data_survives_a_killed_daemon(mnt: Mount) -> None:
    for trial in range(3):
        with open(mnt.point / f"durable{trial}", "wb") as f:
            f.write(b"committed" * 1000)
            os.fsync(f.fileno())
        mnt.kill()
        mnt.start()
        for t in range(trial + 1):
            assert (mnt.point / f"durable{t}").read_bytes() == b"committed" * 1000


def test_a_path_over_the_format_limit_is_enametoolong_and_loses_nothing(mnt: Mount) -> None:
    # Issue 17.5: such a file used to be accepted, the next commit failed, and unrelated
    # uncommitted files were lost while unmount reported success.
    (mnt.point / "unrelated.txt").write_bytes(b"uncommitted work")
    deep = mnt.point
    for _ in range(4):  # 4 x 200 bytes of directories
        deep = deep / ("d" * 199)
    deep.mkdir(parents=True)
    with pytest.raises(OSError) as info:
        (deep / ("f" * 250)).write_bytes(b"x")  # 1050 logical bytes
    assert info.value.errno == errno.ENAMETOOLONG
    (deep / ("f" * 200)).write_bytes(b"fits")  # 1000 bytes
    mnt.remount()
    assert mnt.returncode is None
    assert (mnt.point / "unrelated.txt").read_bytes() == b"uncommitted work"
    assert (deep / ("f" * 200)).read_bytes() == b"fits"


def test_unmount_reports_a_failed_last_commit(mnt: Mount, tmp_path: Path) -> None:
    # Issue 17.5: unmount used to report success although the daemon's last commit failed.
    # Here the host plants a journal symlink: the commit must fail (and not write through it).
    from sealpod.errors import VolumeError
    from sealpod.volume.fuse import unmount

    (mnt.point / "a").write_bytes(b"first")
    with open(mnt.point / "a", "rb") as f:
        os.fsync(f.fileno())
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    (mnt.volume / "journal").unlink(missing_ok=True)
    (mnt.volume / "journal").symlink_to(victim)
    (mnt.point / "a").write_bytes(b"second")
    with pytest.raises(VolumeError, match="commit failed"):
        unmount(mnt.point)
    assert victim.read_bytes() == b"keep me"
    assert mnt.proc is not None
    assert mnt.proc.wait(timeout=30) != 0  # the daemon says so too


def test_tampered_file_reads_as_eio(mnt: Mount) -> None:
    (mnt.point / "victim").write_bytes(os.urandom(200_000))
    (mnt.point / "fine").write_bytes(b"ok")
    mnt.stop()
    hosts = sorted((mnt.volume / "files").iterdir(), key=lambda p: p.stat().st_size)
    victim = hosts[-1]  # the only multi-node file
    raw = bytearray(victim.read_bytes())
    raw[fmt.data_slot(3) * fmt.NODE_SIZE + 10] ^= 1
    victim.write_bytes(raw)
    mnt.start()
    with pytest.raises(OSError) as info:
        (mnt.point / "victim").read_bytes()
    assert info.value.errno == errno.EIO
    assert (mnt.point / "fine").read_bytes() == b"ok"


def test_rolled_back_volume_refuses_to_mount(mnt: Mount, tmp_path: Path) -> None:
    (mnt.point / "f").write_bytes(b"v1")
    mnt.stop()
    shutil.copytree(mnt.volume, tmp_path / "old")
    mnt.start()
    (mnt.point / "f").write_bytes(b"v2")
    mnt.stop()
    shutil.rmtree(mnt.volume)
    shutil.copytree(tmp_path / "old", mnt.volume)
    mnt.start(expect_failure=True)
    assert mnt.proc is not None
    assert mnt.proc.wait(timeout=30) == 15
    assert "volume.rollback" in mnt.log.read_text()
    mnt.proc = None


def test_sqlite_survives_writes_remount_and_integrity_check(mnt: Mount) -> None:
    db = mnt.point / "app.db"
    for journal_mode in ("wal", "delete"):
        conn = sqlite3.connect(db)
        conn.execute(f"PRAGMA journal_mode={journal_mode}")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB)")
        for batch in range(20):
            with conn:
                conn.executemany(
                    "INSERT INTO t (v) VALUES (?)", [(os.urandom(300),) for _ in range(100)]
                )
            if batch % 5 == 0:
                with conn:
                    conn.execute("DELETE FROM t WHERE id % 7 = ?", (batch % 7,))
        conn.execute("CREATE INDEX IF NOT EXISTS tv ON t (v)")
        rows = conn.execute("SELECT count(*) FROM t").fetchone()[0]
        conn.close()
        mnt.remount()
        conn = sqlite3.connect(db)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == rows
        conn.close()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_redis_data_directory_survives_restart(mnt: Mount) -> None:
    data = mnt.point / "redis"
    data.mkdir()
    port = _free_port()

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--protected-mode", "yes", "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return proc
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "redis did not start"
                time.sleep(0.05)

    def cli(*args: str) -> str:
        deadline = time.monotonic() + 30
        while True:
            done = subprocess.run(
                ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
                capture_output=True, text=True, check=True, timeout=30,
            )  # fmt: skip
            # Redis accepts connections while it still loads its AOF (slow on a busy machine).
            if not done.stdout.startswith("LOADING") or time.monotonic() > deadline:
                return done.stdout.strip()
            time.sleep(0.1)

    proc = start()
    try:
        for n in range(200):
            cli("SET", f"key{n}", f"value{n}")
        cli("RPUSH", "list", "a", "b", "c")
        cli("BGREWRITEAOF")
        time.sleep(0.5)
        for n in range(200, 250):
            cli("SET", f"key{n}", f"value{n}")
        cli("SHUTDOWN")
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    mnt.remount()
    proc = start()
    try:
        assert cli("GET", "key0") == "value0"
        assert cli("GET", "key249") == "value249"
        assert cli("DBSIZE") == "251"
        assert cli("LRANGE", "list", "0", "-1").split() == ["a", "b", "c"]
        cli("SHUTDOWN", "NOSAVE")
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_rollback_window_lets_the_counter_lag_then_catches_it_up_while_mounted(
    tmp_path: Path,
) -> None:
    """`--rollback-window-ms`: an fsync returns before the counter store has the commit; the
    server's timer records it within the window, without any further request."""
    m = Mount(tmp_path)
    m.extra_args = ["--rollback-window-ms", "2000"]
    m.start()
    try:
        store = LocalFreshness(m.counters)
        (vid,) = [p.name.removesuffix(".counter") for p in m.counters.iterdir()]
        opened = store.get(vid)
        fd = os.open(m.point / "f", os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            os.write(fd, b"synced inside the window")
            os.fsync(fd)
        finally:
            os.close(fd)
        assert store.get(vid) == opened  # fsync returned; the store does not have it yet
        deadline = time.monotonic() + 15
        while store.get(vid) == opened:
            assert time.monotonic() < deadline, "the counter was never caught up"
            time.sleep(0.05)
        assert store.get(vid) > opened
    finally:
        m.stop()
