"""The KMS fetches DCAP/SNP collateral from Intel PCS and AMD KDS; an answer larger than the
limit is refused after reading just past the limit, never buffered whole."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sealpod.collateral._http import ResponseTooLarge, get_bounded
from sealpod.collateral.cache import ContentCache
from sealpod.collateral.intel import IntelPcsClient
from sealpod.errors import CollateralUnavailable
from sealpod.retry import RetryPolicy
from sealpod.verify.claims import TeeKind

CHUNK = b"\x00" * 65536
#: 64 GiB on paper: only a bounded reader finishes this test.
HUGE_CHUNKS = 1 << 20


class _Endless(httpx.SyncByteStream):
    def __init__(self) -> None:
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(HUGE_CHUNKS):
            self.sent += len(CHUNK)
            yield CHUNK


def _client(stream: _Endless) -> httpx.Client:
    return httpx.Client(
        transport=httpx.MockTransport(lambda _r: httpx.Response(200, stream=stream))
    )


def test_get_bounded_stops_just_past_the_limit() -> None:
    stream = _Endless()
    with _client(stream) as client, pytest.raises(ResponseTooLarge):
        get_bounded(client, "https://pcs.example/x", headers={}, limit=1 << 20)
    assert stream.sent <= (1 << 20) + 2 * len(CHUNK)


def test_get_bounded_keeps_a_small_body_and_its_headers() -> None:
    def answer(_r: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"body", headers={"X-Issuer": "chain"})

    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        got = get_bounded(client, "https://pcs.example/x", headers={}, limit=4)
    assert got.content == b"body"
    assert got.headers["x-issuer"] == "chain"


def test_pcs_answer_larger_than_1_mib_is_unavailable(tmp_path: Path) -> None:
    stream = _Endless()
    with (
        _client(stream) as http,
        IntelPcsClient(
            client=http, cache=ContentCache(tmp_path), retry=RetryPolicy(attempts=1)
        ) as pcs,
        pytest.raises(CollateralUnavailable, match="larger than 1 MiB"),
    ):
        pcs.tcb_info(TeeKind.SGX, "00906ED50000")
    assert stream.sent <= (1 << 20) + 2 * len(CHUNK)
