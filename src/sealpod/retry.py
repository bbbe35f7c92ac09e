"""One retry policy for every remote call sealpod makes (Intel PCS, AMD KDS, the KMS).

The loop itself is `tenacity`'s; this module only fixes the policy the project agrees on, so the
collateral clients and the runtime's KMS client back off the same way:

- the operation raises :class:`Retry` to ask for another attempt (HTTP 429, 5xx, a network
  error); any other exception ends the loop at once and propagates unchanged;
- the wait before attempt ``n + 1`` is the server's ``Retry-After`` when it gave one, otherwise
  ``min(max_delay, base_delay * 2**(n-1) + uniform(0, jitter))`` (exponential with jitter, so
  many clients that failed together do not come back together);
- a server that asks for more than ``max_retry_after`` seconds is not waited for:
  :class:`WaitTooLong` at once;
- after ``attempts`` failed attempts: :class:`GaveUp`, carrying the last reason.

Callers translate :class:`GaveUp` / :class:`WaitTooLong` into their own typed error from
:mod:`sealpod.errors` (e.g. ``CollateralUnavailable``), so no retry type leaks out of a client.

API::

    policy = RetryPolicy(attempts=5, base_delay=1.0, max_delay=60.0, jitter=1.0)

    def attempt() -> httpx.Response:
        response = client.get(url)
        if response.status_code == 429 or response.status_code >= 500:
            raise Retry(f"HTTP {response.status_code}",
                        retry_after=retry_after_seconds(response.headers.get("Retry-After"),
                                                        now=datetime.now(UTC)))
        return response

    try:
        response = retry_call(attempt, policy=policy)            # or: await retry_call_async(...)
    except (GaveUp, WaitTooLong) as exc:
        raise CollateralUnavailable(f"{url}: {exc}") from exc

``sleep`` is injectable (tests pass a list's ``append``); with ``jitter=0`` the waits are exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import tenacity

__all__ = [
    "GaveUp",
    "Retry",
    "RetryPolicy",
    "RetryStopped",
    "WaitTooLong",
    "retry_after_seconds",
    "retry_call",
    "retry_call_async",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How often and how long to retry (all durations in seconds)."""

    attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0
    jitter: float = 1.0
    max_retry_after: float = 300.0  # a server asking for longer than this counts as unavailable


class Retry(Exception):
    """Raised by an attempt to ask for another one; ``retry_after`` is the server's wish."""

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class RetryStopped(Exception):
    """The loop stopped without a result (base of :class:`GaveUp` and :class:`WaitTooLong`)."""

    def __init__(
        self, message: str, *, reason: str, attempts: int, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.attempts = attempts
        self.retry_after = retry_after


class GaveUp(RetryStopped):
    """Every attempt asked for a retry; ``reason`` is the last one's."""


class WaitTooLong(RetryStopped):
    """The server asked to wait longer than the policy's ``max_retry_after``."""


def retry_after_seconds(value: str | None, *, now: datetime) -> float | None:
    """``Retry-After`` (RFC 9110 10.2.3: delta-seconds or an HTTP date) as seconds from ``now``.

    Returns None when the header is absent or unreadable (the caller then backs off on its own);
    a date in the past is 0.

    Raises:
        Nothing: an unreadable value is None.
    """
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():  # str.isdigit() also accepts '¹' or '٣'
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _tenacity_args(policy: RetryPolicy) -> dict[str, Any]:
    backoff = tenacity.wait_exponential_jitter(
        multiplier=policy.base_delay, max=policy.max_delay, exp_base=2, jitter=policy.jitter
    )

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, Retry) and exc.retry_after is not None:
            return exc.retry_after
        return float(backoff(state))

    def should_retry(exc: BaseException) -> bool:
        return isinstance(exc, Retry) and not _too_long(exc, policy)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        log.info("retry: %s, attempt %d, next in %.1f s", exc, state.attempt_number, delay)

    return {
        "stop": tenacity.stop_after_attempt(max(1, policy.attempts)),
        "wait": wait,
        "retry": tenacity.retry_if_exception(should_retry),
        "before_sleep": before_sleep,
        "reraise": False,
    }


def _too_long(exc: Retry, policy: RetryPolicy) -> bool:
    return exc.retry_after is not None and exc.retry_after > policy.max_retry_after


def _stopped(exc: tenacity.RetryError | Retry, policy: RetryPolicy) -> RetryStopped:
    if isinstance(exc, tenacity.RetryError):
        last = exc.last_attempt.exception()
        reason = last.reason if isinstance(last, Retry) else str(last)
        return GaveUp(
            f"{reason} after {policy.attempts} attempts", reason=reason, attempts=policy.attempts
        )
    return WaitTooLong(
        f"{exc.reason}, Retry-After {exc.retry_after:.0f} s is beyond "
        f"{policy.max_retry_after:.0f} s",
        reason=exc.reason,
        attempts=0,
        retry_after=exc.retry_after,
    )


@contextlib.contextmanager
def _translated(policy: RetryPolicy) -> Iterator[None]:
    try:
        yield
    except (tenacity.RetryError, Retry) as exc:
        raise _stopped(exc, policy) from exc


def retry_call(
    fn: Callable[[], T], *, policy: RetryPolicy, sleep: Callable[[float], None] = time.sleep
) -> T:
    """Call ``fn`` until it returns, retrying while it raises :class:`Retry`.

    Raises:
        GaveUp: ``policy.attempts`` attempts all raised :class:`Retry`.
        WaitTooLong: an attempt's ``retry_after`` exceeds ``policy.max_retry_after``.
        Exception: whatever else ``fn`` raises, unchanged and at once.
    """
    with _translated(policy):
        return tenacity.Retrying(sleep=sleep, **_tenacity_args(policy))(fn)


async def retry_call_async(
    fn: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """The coroutine form of :func:`retry_call`: ``fn`` returns an awaitable, ``sleep`` too.

    Raises:
        RetryStopped: as :func:`retry_call` (:class:`GaveUp` or :class:`WaitTooLong`).
        Exception: whatever else ``fn`` raises, unchanged and at once.
    """
    with _translated(policy):
        return await tenacity.AsyncRetrying(sleep=sleep, **_tenacity_args(policy))(fn)
