"""The shared retry policy (sealpod.retry): tenacity underneath, one behaviour for every client."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealpod.retry import (
    GaveUp,
    Retry,
    RetryPolicy,
    WaitTooLong,
    retry_after_seconds,
    retry_call,
    retry_call_async,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _flaky(failures: list[Retry | Exception], result: str = "ok"):  # type: ignore[no-untyped-def]
    calls = []

    def attempt() -> str:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return result

    return attempt, calls


def test_returns_after_retries_with_exponential_backoff() -> None:
    attempt, calls = _flaky([Retry("HTTP 503")] * 3)
    sleeps: list[float] = []
    policy = RetryPolicy(attempts=5, base_delay=0.5, jitter=0)
    assert retry_call(attempt, policy=policy, sleep=sleeps.append) == "ok"
    assert sleeps == [0.5, 1.0, 2.0] and len(calls) == 4


def test_jitter_stays_within_its_bound_and_max_delay_caps() -> None:
    attempt, _ = _flaky([Retry("x")] * 6)
    sleeps: list[float] = []
    policy = RetryPolicy(attempts=7, base_delay=1.0, max_delay=5.0, jitter=0.5)
    retry_call(attempt, policy=policy, sleep=sleeps.append)
    for n, slept in enumerate(sleeps):
        assert min(5.0, 2.0**n) <= slept <= min(5.0, 2.0**n + 0.5)
    assert sleeps[-1] == 5.0


def test_retry_after_wins_over_backoff() -> None:
    attempt, _ = _flaky([Retry("HTTP 429", retry_after=7.0), Retry("HTTP 429", retry_after=0.0)])
    sleeps: list[float] = []
    retry_call(attempt, policy=RetryPolicy(jitter=0), sleep=sleeps.append)
    assert sleeps == [7.0, 0.0]


def test_gives_up_with_the_last_reason() -> None:
    attempt, calls = _flaky([Retry("HTTP 500"), Retry("HTTP 429")] * 5)
    sleeps: list[float] = []
    with pytest.raises(GaveUp, match="HTTP 429 after 2 attempts") as info:
        retry_call(attempt, policy=RetryPolicy(attempts=2), sleep=sleeps.append)
    assert info.value.reason == "HTTP 429" and len(calls) == 2 and len(sleeps) == 1


def test_a_long_retry_after_stops_at_once() -> None:
    attempt, calls = _flaky([Retry("HTTP 429", retry_after=3600.0)])
    sleeps: list[float] = []
    with pytest.raises(WaitTooLong, match="Retry-After 3600 s is beyond 300 s") as info:
        retry_call(attempt, policy=RetryPolicy(), sleep=sleeps.append)
    assert info.value.retry_after == 3600.0 and sleeps == [] and len(calls) == 1


def test_other_exceptions_propagate_unchanged_and_unretried() -> None:
    attempt, calls = _flaky([KeyError("boom")])
    with pytest.raises(KeyError):
        retry_call(attempt, policy=RetryPolicy(), sleep=lambda _: None)
    assert len(calls) == 1


def test_async_form_behaves_the_same() -> None:
    failures = [Retry("HTTP 503"), Retry("HTTP 503", retry_after=2.0)]
    sleeps: list[float] = []

    async def attempt() -> str:
        if failures:
            raise failures.pop(0)
        return "ok"

    async def sleep(secs: float) -> None:
        sleeps.append(secs)

    policy = RetryPolicy(base_delay=1.0, jitter=0)
    assert asyncio.run(retry_call_async(attempt, policy=policy, sleep=sleep)) == "ok"
    assert sleeps == [1.0, 2.0]


def test_retry_after_parsing() -> None:
    assert retry_after_seconds("5", now=NOW) == 5.0
    assert retry_after_seconds(" 12 ", now=NOW) == 12.0
    assert retry_after_seconds(None, now=NOW) is None
    assert retry_after_seconds("soon", now=NOW) is None
    assert retry_after_seconds("-3", now=NOW) is None
    later = format_datetime(NOW + timedelta(seconds=30), usegmt=True)
    assert retry_after_seconds(later, now=NOW) == 30.0
    earlier = format_datetime(NOW - timedelta(seconds=30), usegmt=True)
    assert retry_after_seconds(earlier, now=NOW) == 0.0


@given(st.text(max_size=64))
def test_retry_after_never_raises(value: str) -> None:
    got = retry_after_seconds(value, now=NOW)
    assert got is None or got >= 0.0
