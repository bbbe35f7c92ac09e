"""Token buckets: the shared limiter behaves like the in-process one, is shared with forked
processes, and survives a full table (idle clients give their slots up)."""

from __future__ import annotations

import multiprocessing
import os
import signal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealpod.kms.ratelimit import RateLimiter, SharedRateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refill() -> None:
    clock = Clock()
    with SharedRateLimiter(2.0, 3, clock=clock) as limiter:
        assert [limiter.allow("a") for _ in range(3)] == [0.0, 0.0, 0.0]
        assert limiter.allow("a") == pytest.approx(0.5)  # 1 token at 2/s
        assert limiter.allow("b") == 0.0  # another client has its own bucket
        clock.now += 0.5
        assert limiter.allow("a") == 0.0
        assert limiter.allow("a") > 0.0


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["10.0.0.1", "10.0.0.2", "::1", "x"]), st.floats(0, 3)),
        max_size=60,
    ),
    st.floats(0.1, 5),
    st.integers(1, 5),
)
def test_shared_limiter_answers_like_the_in_process_one(
    steps: list[tuple[str, float]], rate: float, burst: int
) -> None:
    clock = Clock()
    local = RateLimiter(rate, burst, clock)
    with SharedRateLimiter(rate, burst, clock=clock) as shared:
        for key, dt in steps:
            clock.now += dt
            assert shared.allow(key) == pytest.approx(local.allow(key))


def _drain(limiter: SharedRateLimiter, n: int, out: multiprocessing.SimpleQueue[float]) -> None:
    for _ in range(n):
        out.put(limiter.allow("client"))


def test_forked_processes_share_the_buckets() -> None:
    limiter = SharedRateLimiter(0.001, 5)
    ctx = multiprocessing.get_context("fork")
    results: multiprocessing.SimpleQueue[float] = ctx.SimpleQueue()
    workers = [ctx.Process(target=_drain, args=(limiter, 4, results)) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=30)
        assert w.exitcode == 0
    waits = [results.get() for _ in range(8)]
    assert waits.count(0.0) == 5  # 5 tokens for both processes together, not 5 each
    assert limiter.allow("client") > 0.0  # ... and the parent sees them spent
    limiter.close()


def _die_holding_the_lock(limiter: SharedRateLimiter) -> None:
    with limiter._locked():
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_worker_killed_holding_the_lock_does_not_freeze_the_others() -> None:
    with SharedRateLimiter(1.0, 2) as limiter:
        ctx = multiprocessing.get_context("fork")
        victim = ctx.Process(target=_die_holding_the_lock, args=(limiter,))
        victim.start()
        victim.join(timeout=30)
        assert victim.exitcode == -signal.SIGKILL
        results: multiprocessing.SimpleQueue[float] = ctx.SimpleQueue()
        survivor = ctx.Process(target=_drain, args=(limiter, 1, results))
        survivor.start()
        survivor.join(timeout=10)  # the kernel released the dead worker's record lock
        assert survivor.exitcode == 0
        assert results.get() == 0.0


def test_a_full_table_reuses_the_idlest_slot() -> None:
    clock = Clock()
    limiter = SharedRateLimiter(0.001, 1, slots=8, clock=clock)
    for i in range(8):
        clock.now += 1
        assert limiter.allow(f"c{i}") == 0.0
        assert limiter.allow(f"c{i}") > 0.0
    clock.now += 1
    assert limiter.allow("newcomer") == 0.0  # took c0's slot (the idlest)
    assert limiter.allow("c7") > 0.0  # the busy ones keep their buckets
    assert limiter.allow("c0") == 0.0  # c0 comes back to a full bucket: never stricter
    limiter.close()


def test_too_small_a_table_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 8"):
        SharedRateLimiter(1.0, 1, slots=4)


def test_a_table_that_cannot_be_allocated_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import errno

    from sealpod.errors import ConfigError

    def full(fd: int, offset: int, size: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(ConfigError, match="shared rate-limit table"):
        SharedRateLimiter(1.0, 1)


def test_a_filesystem_without_preallocation_gets_a_sparse_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import errno

    def unsupported(fd: int, offset: int, size: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    with SharedRateLimiter(1.0, 1) as limiter:
        assert limiter.allow("a") == 0.0
