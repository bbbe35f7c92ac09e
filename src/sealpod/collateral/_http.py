"""A GET whose body is read with a bound, for the collateral services (Intel PCS, AMD KDS).

``httpx.Client.get`` buffers the whole body before the caller can look at its size, so a
server (or anything in its place) could make the KMS hold gigabytes; here the body is streamed
and the read stops one chunk past the limit (counted after content decoding, so a compressed
bomb stops too).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import httpx

from sealpod.retry import Retry, retry_after_seconds

#: Headers that describe the wire form of the body, not the bytes we keep.
_WIRE_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


class ResponseTooLarge(Exception):
    """The body is longer than the limit (callers map it to their collateral error)."""


def get_bounded(
    client: httpx.Client, url: str, *, headers: Mapping[str, str], limit: int
) -> httpx.Response:
    """GET ``url`` and return the response with at most ``limit`` bytes of (decoded) body.

    Raises:
        ResponseTooLarge: the body is longer than ``limit`` bytes.
        httpx.HTTPError: the request failed.
    """
    with client.stream("GET", url, headers=dict(headers)) as response:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > limit:
                raise ResponseTooLarge(f"{url}: response larger than {limit} bytes")
            chunks.append(chunk)
    kept = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _WIRE_HEADERS]
    return httpx.Response(
        response.status_code, headers=kept, content=b"".join(chunks), request=response.request
    )


def get_or_retry(
    client: httpx.Client, url: str, *, headers: Mapping[str, str], limit: int, now: datetime
) -> httpx.Response:
    """One attempt of a bounded GET for :func:`sealpod.retry.retry_call`.

    A network error, HTTP 429 or a 5xx raises :class:`~sealpod.retry.Retry` (carrying the
    server's ``Retry-After``, read against ``now``); any other answer is returned for the caller
    to judge.

    Raises:
        Retry: the request may succeed if tried again.
        ResponseTooLarge: the body is longer than ``limit`` bytes.
    """
    try:
        response = get_bounded(client, url, headers=headers, limit=limit)
    except httpx.HTTPError as exc:
        raise Retry(f"network error ({type(exc).__name__}: {exc})") from exc
    status = response.status_code
    if status == 429 or status >= 500:
        asked = retry_after_seconds(response.headers.get("Retry-After"), now=now)
        raise Retry(f"HTTP {status}", retry_after=asked)
    return response
