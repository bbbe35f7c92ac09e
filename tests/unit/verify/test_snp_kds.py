"""AMD KDS client against a fake KDS on 127.0.0.1: URLs, content cache, 429 back-off."""

from __future__ import annotations

import datetime as dt
import email.utils
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from test_snp_factory import NOW, crl_for, make_pki, signed_report

from sealpod.collateral.kds import KDS_RETRY, KdsClient, vcek_path
from sealpod.errors import CollateralUnavailable, MalformedCollateral
from sealpod.evidence.snp_report import SnpProduct, TcbVersion, parse_report
from sealpod.verify.snp import SnpVerifier
from sealpod.verify.trust import TrustAnchors

NO_JITTER = replace(KDS_RETRY, jitter=0)


@dataclass
class FakeKds:
    """Routes path -> list of (status, headers, body) answers; the last one repeats."""

    routes: dict[str, list[tuple[int, dict[str, str], bytes]]] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)
    url: str = ""

    def answer(self, path: str) -> tuple[int, dict[str, str], bytes]:
        self.hits.append(path)
        queue = self.routes.get(path)
        if not queue:
            return 404, {}, b"not found"
        return queue.pop(0) if len(queue) > 1 else queue[0]


@pytest.fixture
def kds() -> Iterator[FakeKds]:
    fake = FakeKds()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, headers, body = fake.answer(self.path)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


class Clock:
    """A fake monotonic clock that advances when the client sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def sleep(self, secs: float) -> None:
        self.sleeps.append(round(secs, 3))
        self.now += secs

    def __call__(self) -> float:
        return self.now


def client(kds: FakeKds, cache: Path | None, clock: Clock | None = None, **kw: object) -> KdsClient:
    clock = clock or Clock()
    kw.setdefault("retry", NO_JITTER)
    return KdsClient(base_url=kds.url, cache_dir=cache, sleep=clock.sleep, clock=clock, **kw)  # type: ignore[arg-type]


def milan_vcek_path() -> str:
    pki = make_pki()
    return vcek_path(SnpProduct.MILAN, pki.hwid.ljust(64, b"\x00"), pki.tcb)


# --- URLs ---------------------------------------------------------------------------------------
def test_vcek_path_milan() -> None:
    tcb = TcbVersion(bootloader=3, tee=0, snp=8, microcode=115)
    path = vcek_path(SnpProduct.MILAN, bytes(range(64)), tcb)
    assert path == (
        f"/vcek/v1/Milan/{bytes(range(64)).hex()}?blSPL=3&teeSPL=0&snpSPL=8&ucodeSPL=115"
    )


def test_vcek_path_turin_uses_8_byte_hwid_and_fmc() -> None:
    tcb = TcbVersion(fmc=1, bootloader=2, tee=0, snp=5, microcode=9)
    path = vcek_path(SnpProduct.TURIN, bytes(range(8)) + bytes(56), tcb)
    assert path == "/vcek/v1/Turin/0001020304050607?fmcSPL=1&blSPL=2&teeSPL=0&snpSPL=5&ucodeSPL=9"


def test_vcek_path_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="64"):
        vcek_path(SnpProduct.MILAN, b"\x00", TcbVersion(bootloader=0, tee=0, snp=0, microcode=0))
    with pytest.raises(ValueError, match="FMC"):
        vcek_path(SnpProduct.TURIN, bytes(64), TcbVersion(bootloader=0, tee=0, snp=0, microcode=0))


# --- fetch, cache, verify -----------------------------------------------------------------------
def test_fetched_vcek_and_chain_verify_a_report(kds: FakeKds, tmp_path: Path) -> None:
    pki = make_pki()
    kds.routes[milan_vcek_path()] = [(200, {}, pki.vcek)]
    kds.routes["/vcek/v1/Milan/cert_chain"] = [(200, {}, pki.chain)]
    raw = signed_report(pki)
    with client(kds, tmp_path) as c:
        vcek = c.vcek_for_report(parse_report(raw), SnpProduct.MILAN)
        chain = c.cert_chain(SnpProduct.MILAN)
    trust = TrustAnchors(intel_roots=frozenset(), amd_arks=frozenset({pki.ark_fingerprint}))
    claims = SnpVerifier(trust).verify(raw, vcek=vcek, chain=chain, now=NOW)
    assert claims.snp is not None and claims.snp.product == "Milan"


def test_second_fetch_comes_from_the_content_cache(kds: FakeKds, tmp_path: Path) -> None:
    pki = make_pki()
    kds.routes[milan_vcek_path()] = [(200, {}, pki.vcek)]
    with client(kds, tmp_path) as c:
        first = c.vcek(SnpProduct.MILAN, pki.hwid, pki.tcb)
    with client(kds, tmp_path) as c:  # a new client, same cache directory
        second = c.vcek(SnpProduct.MILAN, pki.hwid, pki.tcb)
    assert first == second == pki.vcek
    assert len(kds.hits) == 1
    blobs = list((tmp_path / "blobs").iterdir())
    assert [b.name for b in blobs] == [__import__("hashlib").sha256(pki.vcek).hexdigest()]
    assert oct(blobs[0].stat().st_mode & 0o777) == "0o600"


def test_corrupted_cache_blob_is_refetched(kds: FakeKds, tmp_path: Path) -> None:
    pki = make_pki()
    kds.routes[milan_vcek_path()] = [(200, {}, pki.vcek)]
    with client(kds, tmp_path) as c:
        c.vcek(SnpProduct.MILAN, pki.hwid, pki.tcb)
    [blob] = (tmp_path / "blobs").iterdir()
    blob.write_bytes(b"tampered")
    with client(kds, tmp_path) as c:
        assert c.vcek(SnpProduct.MILAN, pki.hwid, pki.tcb) == pki.vcek
    assert len(kds.hits) == 2


@pytest.mark.parametrize("how", ["fifo", "oversized", "directory"])
def test_hostile_cache_blob_is_refetched_without_hanging(
    kds: FakeKds, tmp_path: Path, how: str
) -> None:
    pki = make_pki()
    kds.routes[milan_vcek_path()] = [(200, {}, pki.vcek)]
    with client(kds, tmp_path) as c:
        c.vcek(SnpProduct.MILAN, pki.hwid, pki.tcb)
    [blob] = (tmp_path / "blobs").iterdir()
    blob.unlink()
    if how == "fifo":  # opening it for reading used to block forever
        os.mkfifo(blob)
    elif how == "oversized":  # sparse: 2 MiB on paper, read no further than the limit
        with blob.open("wb") as f:
            f.truncate(2 * 1024 * 1024)
    else:
        blob.mkdir()
    with client(kds, tmp_path) as c:
        assert c.vcek(SnpProduct.MILAN, pki.hwid, pki.tcb) == pki.vcek
    assert len(kds.hits) == 2


def test_oversized_cache_index_is_ignored(kds: FakeKds, tmp_path: Path) -> None:
    pki = make_pki()
    kds.routes[milan_vcek_path()] = [(200, {}, pki.vcek)]
    with client(kds, tmp_path) as c:
        c.vcek(SnpProduct.MILAN, pki.hwid, pki.tcb)
    [index] = (tmp_path / "index").iterdir()
    index.write_bytes(index.read_bytes() + b" " * 8192)  # still valid JSON, but too large
    with client(kds, tmp_path) as c:
        assert c.vcek(SnpProduct.MILAN, pki.hwid, pki.tcb) == pki.vcek
    assert len(kds.hits) == 2


def test_without_cache_every_call_fetches(kds: FakeKds) -> None:
    pki = make_pki()
    kds.routes["/vcek/v1/Milan/cert_chain"] = [(200, {}, pki.chain)]
    with client(kds, None) as c:
        c.cert_chain(SnpProduct.MILAN)
        c.cert_chain(SnpProduct.MILAN)
    assert len(kds.hits) == 2


def test_crl_is_reused_only_until_next_update(kds: FakeKds, tmp_path: Path) -> None:
    pki = make_pki()
    crl = crl_for(pki, next_update=NOW + dt.timedelta(days=1))
    kds.routes["/vcek/v1/Milan/crl"] = [(200, {}, crl)]
    with client(kds, tmp_path) as c:
        assert c.crl(SnpProduct.MILAN, now=NOW) == crl
        assert c.crl(SnpProduct.MILAN, now=NOW + dt.timedelta(hours=1)) == crl
        assert len(kds.hits) == 1
        c.crl(SnpProduct.MILAN, now=NOW + dt.timedelta(days=2))
        assert len(kds.hits) == 2


def test_vlek_chain_path(kds: FakeKds) -> None:
    pki = make_pki()
    kds.routes["/vlek/v1/Milan/cert_chain"] = [(200, {}, pki.vlek_chain)]
    with client(kds, None) as c:
        assert c.cert_chain(SnpProduct.MILAN, kind="vlek") == pki.vlek_chain


# --- refusals and back-off ----------------------------------------------------------------------
def test_404_is_collateral_unavailable(kds: FakeKds) -> None:
    with client(kds, None) as c, pytest.raises(CollateralUnavailable, match="HTTP 404"):
        c.cert_chain(SnpProduct.GENOA)


def test_garbage_answer_is_malformed_and_not_cached(kds: FakeKds, tmp_path: Path) -> None:
    pki = make_pki()
    kds.routes[milan_vcek_path()] = [(200, {}, b"<html>maintenance</html>")]
    with client(kds, tmp_path) as c, pytest.raises(MalformedCollateral):
        c.vcek(SnpProduct.MILAN, pki.hwid, pki.tcb)
    assert not (tmp_path / "blobs").exists()


def test_chain_without_ark_is_malformed(kds: FakeKds) -> None:
    pki = make_pki()
    from test_snp_factory import pem

    kds.routes["/vcek/v1/Milan/cert_chain"] = [(200, {}, pem(pki.ask))]
    with client(kds, None) as c, pytest.raises(MalformedCollateral, match="ARK"):
        c.cert_chain(SnpProduct.MILAN)


def test_429_honours_retry_after_seconds(kds: FakeKds) -> None:
    pki = make_pki()
    kds.routes["/vcek/v1/Milan/cert_chain"] = [
        (429, {"Retry-After": "7"}, b""),
        (200, {}, pki.chain),
    ]
    clock = Clock()
    with client(kds, None, clock) as c:
        assert c.cert_chain(SnpProduct.MILAN) == pki.chain
    assert clock.sleeps == [7.0]


def test_429_back_off_applies_to_the_next_request_too(kds: FakeKds) -> None:
    pki = make_pki()
    kds.routes["/vcek/v1/Milan/cert_chain"] = [(429, {"Retry-After": "5"}, b"")]
    kds.routes["/vcek/v1/Milan/crl"] = [(200, {}, crl_for(pki))]
    clock = Clock()
    with client(kds, None, clock, retry=replace(NO_JITTER, attempts=1)) as c:
        with pytest.raises(CollateralUnavailable, match="after 1 attempts"):
            c.cert_chain(SnpProduct.MILAN)
        c.crl(SnpProduct.MILAN, now=NOW)  # another URL: still waits out the 5 s first
    assert clock.sleeps == [5.0]


def test_429_with_http_date_retry_after(kds: FakeKds) -> None:
    pki = make_pki()
    when = email.utils.format_datetime(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30), True)
    kds.routes["/vcek/v1/Milan/cert_chain"] = [
        (429, {"Retry-After": when}, b""),
        (200, {}, pki.chain),
    ]
    clock = Clock()
    with client(kds, None, clock) as c:
        c.cert_chain(SnpProduct.MILAN)
    assert len(clock.sleeps) == 1 and 20 <= clock.sleeps[0] <= 31


def test_429_without_retry_after_backs_off_exponentially_then_gives_up(kds: FakeKds) -> None:
    kds.routes["/vcek/v1/Milan/cert_chain"] = [(429, {}, b"")]
    clock = Clock()
    with client(kds, None, clock, retry=replace(NO_JITTER, attempts=4)) as c:
        with pytest.raises(CollateralUnavailable, match=r"after 4 attempts .*HTTP 429"):
            c.cert_chain(SnpProduct.MILAN)
    assert clock.sleeps == [2.0, 4.0, 8.0]
    assert len(kds.hits) == 4


def test_retry_after_longer_than_max_wait_fails_at_once(kds: FakeKds) -> None:
    kds.routes["/vcek/v1/Milan/cert_chain"] = [(429, {"Retry-After": "3600"}, b"")]
    clock = Clock()
    with client(kds, None, clock, retry=replace(NO_JITTER, max_retry_after=60)) as c:
        with pytest.raises(CollateralUnavailable, match="asks to wait 3600 s"):
            c.cert_chain(SnpProduct.MILAN)
    assert clock.sleeps == [] and len(kds.hits) == 1


def test_5xx_is_retried(kds: FakeKds) -> None:
    pki = make_pki()
    kds.routes["/vcek/v1/Milan/cert_chain"] = [(503, {}, b""), (200, {}, pki.chain)]
    clock = Clock()
    with client(kds, None, clock) as c:
        assert c.cert_chain(SnpProduct.MILAN) == pki.chain
    assert clock.sleeps == [2.0]


def test_other_4xx_is_not_retried(kds: FakeKds) -> None:
    kds.routes["/vcek/v1/Milan/cert_chain"] = [(403, {}, b"")]
    with client(kds, None) as c, pytest.raises(CollateralUnavailable, match="HTTP 403"):
        c.cert_chain(SnpProduct.MILAN)
    assert len(kds.hits) == 1


def test_network_error_is_retried_then_unavailable() -> None:
    clock = Clock()
    c = KdsClient(
        base_url="http://127.0.0.1:9",
        sleep=clock.sleep,
        clock=clock,
        retry=replace(NO_JITTER, attempts=2),
    )
    with c, pytest.raises(CollateralUnavailable, match="network error"):
        c.cert_chain(SnpProduct.MILAN)
    assert clock.sleeps == [2.0]


def test_masked_chip_id_cannot_be_fetched() -> None:
    pki = make_pki()
    report = parse_report(signed_report(pki, key_info=0b10, chip_id=bytes(64)))
    with KdsClient(base_url="http://127.0.0.1:9") as c, pytest.raises(CollateralUnavailable):
        c.vcek_for_report(report, SnpProduct.MILAN)
