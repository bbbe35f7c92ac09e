"""Crash consistency: SIGKILL a writer at random instants, then check what survives.

A forked child opens the volume, applies a random sequence of writes, truncates, replace-by-
rename and unlinks, and calls ``sync()`` now and then, reporting each acknowledged sync to the
parent through a pipe. The parent kills it at a random instant (during open, a write, any step
of a commit or of journal recovery), reopens the volume and requires that every file reads
without an integrity error and that the whole volume equals the state after some prefix of the
operations no shorter than the last acknowledged sync.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import time
from pathlib import Path

import pytest

from sealpod.volume import LocalFreshness, MemoryFreshness, Volume, create_volume, open_volume

from .conftest import journal_records

TRIALS = 200
NAMES = ["a", "b", "c", "d/e"]
Op = tuple[object, ...]
State = dict[str, bytes]


def _make_ops(rng: random.Random, count: int) -> list[Op]:
    ops: list[Op] = []
    for _ in range(count):
        r = rng.random()
        name = rng.choice(NAMES)
        if r < 0.5:
            off = rng.choice([0, rng.randrange(60_000), rng.randrange(400_000)])
            ops.append(
                ("write", name, off, rng.randbytes(rng.choice([1, 700, 4096, 9000, 30_000])))
            )
        elif r < 0.6:
            ops.append(("truncate", name, rng.choice([0, 100, 5000, rng.randrange(350_000)])))
        elif r < 0.68:
            ops.append(("replace", name, rng.randbytes(rng.randrange(1, 12_000))))
        elif r < 0.72:
            ops.append(("unlink", name))
        else:
            ops.append(("sync",))
    return ops


def _apply_model(state: State, op: Op) -> None:
    kind, name = op[0], str(op[1]) if len(op) > 1 else ""
    if kind == "write":
        off, data = int(op[2]), bytes(op[3])  # type: ignore[call-overload]
        cur = bytearray(state.get(name, b""))
        if off > len(cur):
            cur.extend(bytes(off - len(cur)))
        cur[off : off + len(data)] = data
        state[name] = bytes(cur)
    elif kind == "truncate":
        if name in state:
            size = int(op[2])  # type: ignore[call-overload]
            state[name] = state[name][:size] + bytes(max(0, size - len(state[name])))
    elif kind == "replace":
        state[name] = bytes(op[2])  # type: ignore[call-overload]
    elif kind == "unlink":
        state.pop(name, None)


def _apply_volume(vol: Volume, state: State, op: Op) -> None:
    kind, name = op[0], str(op[1]) if len(op) > 1 else ""
    if kind == "write":
        mode = "r+b" if name in state else "wb"
        with vol.open(name, mode) as f:
            f.pwrite(bytes(op[3]), int(op[2]))  # type: ignore[call-overload]
    elif kind == "truncate" and name in state:
        vol.truncate(name, int(op[2]))  # type: ignore[call-overload]
    elif kind == "replace":
        vol.write_file(name + ".tmp", bytes(op[2]))  # type: ignore[call-overload]
        vol.rename(name + ".tmp", name)
    elif kind == "unlink" and name in state:
        vol.unlink(name)
    elif kind == "sync":
        vol.sync()
    _apply_model(state, op)


def _digest(state: State) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode() + b"\0" + len(state[name]).to_bytes(8, "little") + state[name])
    return h.hexdigest()


def _child(path: Path, key: bytes, counters: Path, state: State, ops: list[Op], ack: int) -> None:
    code = 0
    try:
        vol = open_volume(path, key, counter=LocalFreshness(counters))
        os.write(ack, b"open\n")
        for n, op in enumerate(ops):
            _apply_volume(vol, state, op)
            if op[0] == "sync":
                os.write(ack, f"{n}\n".encode())
        vol.close()
        os.write(ack, b"closed\n")
    except BaseException as exc:  # reported to the parent, which fails the test
        os.write(ack, f"error {type(exc).__name__}: {exc}\n".encode())
        code = 1
    finally:
        os._exit(code)


def _read_back(path: Path, key: bytes, counters: Path, readonly: bool) -> State:
    out: State = {}
    with open_volume(path, key, counter=LocalFreshness(counters), readonly=readonly) as vol:
        for name, st in vol.walk():
            if st.is_file:
                out[name] = vol.read_file(name)
    return out


@pytest.mark.slow
def test_sigkill_at_random_instants_never_loses_acknowledged_writes(tmp_path: Path) -> None:
    rng = random.Random(20240607)
    key = os.urandom(32)
    path, counters = tmp_path / "vol", tmp_path / "counters"
    create_volume(path, key, counter=LocalFreshness(counters))
    with open_volume(path, key, counter=LocalFreshness(counters)) as vol:
        vol.mkdir("d")
    state: State = {}
    deadline = time.monotonic() + 150
    outcomes = {"killed": 0, "finished": 0, "acked": 0}
    for trial in range(TRIALS):
        assert time.monotonic() < deadline, f"crash test too slow (trial {trial})"
        ops = _make_ops(rng, 300)
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns
            os.close(read_fd)
            _child(path, key, counters, dict(state), ops, write_fd)
        os.close(write_fd)
        time.sleep(rng.uniform(0.0, 0.12))
        os.kill(pid, signal.SIGKILL)
        _, _status = os.waitpid(pid, 0)
        with os.fdopen(read_fd, "rb") as pipe:
            lines = pipe.read().decode().split()
        assert not any(line.startswith("error") for line in lines), lines
        acked = [int(x) for x in lines if x.isdigit()]
        outcomes["finished" if "closed" in lines else "killed"] += 1
        outcomes["acked"] += len(acked)
        first_valid = acked[-1] + 1 if acked else 0
        # Alternate read-only verification (pending journal seen as an overlay) and writable
        # (journal replayed, session commit).
        got = _read_back(path, key, counters, readonly=trial % 2 == 0)
        digest = _digest(got)
        model = dict(state)
        matched = False
        for n in range(len(ops) + 1):
            if n >= first_valid and _digest(model) == digest:
                matched = True
                break
            if n < len(ops):
                _apply_model(model, ops[n])
        assert matched, (
            f"trial {trial}: recovered state is not a prefix at or after the last "
            f"acknowledged sync (acked ops {acked})"
        )
        state = got
    assert outcomes["killed"] > TRIALS * 3 // 4
    assert outcomes["acked"] > TRIALS


def test_a_record_torn_over_an_earlier_rounds_records_is_discarded(tmp_path: Path) -> None:
    """After a checkpoint, records are written from offset 0 again, over the earlier round's,
    which stay behind them. A crash while one is written leaves its start followed by the older
    bytes: that must end the log (the state before it), and nothing stale may be replayed."""
    key, store = os.urandom(32), MemoryFreshness()
    path = tmp_path / "vol"
    create_volume(path, key, counter=store)
    with open_volume(path, key, counter=store) as vol:
        vol.write_file("f", os.urandom(200_000))
    with open_volume(path, key, counter=store) as vol:  # overwrites committed slots: journaled
        vol.write_file("f", os.urandom(200_000))
        vol.sync()
    old_round = (path / "journal").read_bytes()  # the close checkpointed this round
    with open_volume(path, key, counter=store) as vol:
        before = dict(store.values)
        snapshot = tmp_path / "snap"
        shutil.copytree(path, snapshot, ignore=shutil.ignore_patterns("*.lock"))
        state_before = vol.read_file("f")
        with vol.open("f", "r+b") as f:  # one node of a committed file: a short record
            f.write(os.urandom(3000))
        vol.sync()
        new_round = (path / "journal").read_bytes()
    new_records, old_records = journal_records(new_round), journal_records(old_round)
    new_end = sum(r.size for r in new_records[:2])
    assert new_records[1].counter > old_records[-1].counter
    assert len(new_round) == len(old_round) > new_end  # the old round's tail is still there
    for cut in (new_end - 1, new_end - 96, new_end - 4096):
        shutil.rmtree(path)  # the volume as it was before the short commit, with a torn record
        shutil.copytree(snapshot, path)
        (path / "journal").write_bytes(new_round[:cut] + old_round[cut:])
        store.values.clear()
        store.values.update(before)
        with open_volume(path, key, counter=store) as vol:
            assert vol.read_file("f") == state_before


def test_a_file_cut_short_and_grown_again_survives_a_crash(tmp_path: Path) -> None:
    """Records apply in place without syncing until a checkpoint. Slots past a file's new end
    are written in place again, outside the journal, once the file grows; a replay of an older
    record must not write over them. Here the crash is a copy of the directory as the killed
    process leaves it (the page cache survives a SIGKILL)."""
    key, store = os.urandom(32), MemoryFreshness()
    path = tmp_path / "vol"
    create_volume(path, key, counter=store)
    with open_volume(path, key, counter=store) as vol:
        vol.write_file("f", os.urandom(200_000))
        vol.sync()
        with vol.open("f", "r+b") as f:  # journaled overwrites of slots that will be cut
            f.seek(150_000)
            f.write(os.urandom(8192))
        vol.sync()
        with vol.open("f", "r+b") as f:
            f.truncate(0)
        vol.sync()
        grown = os.urandom(200_000)
        vol.write_file("f", grown)  # fresh slots again, written in place
        vol.sync()
        crashed = tmp_path / "crashed"
        shutil.copytree(path, crashed, ignore=shutil.ignore_patterns("*.lock"))
        copy = MemoryFreshness()
        copy.values.update(store.values)
    with open_volume(crashed, key, counter=copy) as vol:
        assert vol.read_file("f") == grown
