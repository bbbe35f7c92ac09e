"""Intel PCS client against a fake PCS on 127.0.0.1: back-off on 429, cache hits, fallbacks."""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from sealpod.collateral.cache import ContentCache
from sealpod.collateral.intel import (
    IntelPcsClient,
    PcsCollateralProvider,
)
from sealpod.collateral.models import DcapCollateralProvider, QuoteCollateral
from sealpod.errors import CollateralUnavailable, MalformedCollateral
from sealpod.retry import RetryPolicy, retry_after_seconds
from sealpod.testing.dcap_builders import DcapPki, pcs_response, pem
from sealpod.verify.claims import TcbStatus, TeeKind
from sealpod.verify.dcap import DcapVerifier

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@dataclass
class FakePcs:
    """Routes (path?query -> status, headers, body) plus scripted failures per path."""

    routes: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    script: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def respond(self, path: str) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            self.log.append(path)
            queued = self.script.get(path)
            if queued:
                status, headers = queued.pop(0)
                return status, headers, b"slow down"
        return self.routes.get(path, (404, {}, b"not found"))


def _serve(fake: FakePcs) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, headers, body = fake.respond(self.path)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    ).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(scope="module")
def pki() -> DcapPki:
    return DcapPki.create(now=NOW)


@pytest.fixture(scope="module")
def collateral(pki: DcapPki) -> QuoteCollateral:
    return pki.collateral(tee="tdx")


@pytest.fixture
def pcs(pki: DcapPki, collateral: QuoteCollateral) -> Iterator[tuple[FakePcs, str]]:
    fake = FakePcs()
    quote = urllib.parse.quote
    fmspc = pki.facts.fmspc.hex().upper()
    signing = collateral.tcb_info_issuer_chain
    fake.routes = {
        f"/tdx/certification/v4/tcb?fmspc={fmspc}": (
            200,
            {"TCB-Info-Issuer-Chain": quote(signing)},
            pcs_response("tcbInfo", collateral.tcb_info, collateral.tcb_info_signature),
        ),
        "/tdx/certification/v4/qe/identity?update=standard": (
            200,
            {"SGX-Enclave-Identity-Issuer-Chain": quote(signing)},
            pcs_response(
                "enclaveIdentity", collateral.qe_identity, collateral.qe_identity_signature
            ),
        ),
        "/sgx/certification/v4/pckcrl?ca=platform&encoding=der": (
            200,
            {"SGX-PCK-CRL-Issuer-Chain": quote(pem(pki.pck_ca) + pem(pki.root))},
            collateral.pck_crl or b"",
        ),
        "/rootcrl.der": (200, {}, collateral.root_ca_crl),
    }
    server, url = _serve(fake)
    try:
        yield fake, url
    finally:
        server.shutdown()
        server.server_close()


def _client(
    url: str, cache_dir: Path, sleeps: list[float] | None = None, now: datetime = NOW, **kw: object
) -> IntelPcsClient:
    return IntelPcsClient(
        url,
        root_ca_crl_url=url + "/rootcrl.der",
        cache=ContentCache(cache_dir),
        sleep=(sleeps.append if sleeps is not None else (lambda _: None)),
        clock=lambda: now,
        **({"retry": RetryPolicy(jitter=0)} | kw),  # type: ignore[arg-type]
    )


def test_fetches_verifiable_collateral(
    pcs: tuple[FakePcs, str], pki: DcapPki, collateral: QuoteCollateral, tmp_path: Path
) -> None:
    fake, url = pcs
    with _client(url, tmp_path) as client:
        provider = PcsCollateralProvider(client)
        assert isinstance(provider, DcapCollateralProvider)
        got = provider.get(pki.facts.fmspc.hex(), "platform", TeeKind.TDX)
    assert got.tcb_info == collateral.tcb_info  # byte for byte
    assert got.qe_identity == collateral.qe_identity
    assert got.pck_crl == collateral.pck_crl
    assert got.root_ca_crl == collateral.root_ca_crl
    claims = DcapVerifier(pki.trust()).verify(pki.quote(tee="tdx").to_bytes(), got, now=NOW)
    assert claims.tcb_status is TcbStatus.UP_TO_DATE
    assert len(fake.log) == 4


def test_second_client_hits_the_disk_cache(
    pcs: tuple[FakePcs, str], pki: DcapPki, tmp_path: Path
) -> None:
    fake, url = pcs
    fmspc = pki.facts.fmspc.hex()
    with _client(url, tmp_path) as first:
        PcsCollateralProvider(first).get(fmspc, "platform", TeeKind.TDX)
    with _client(url, tmp_path) as second:
        again = PcsCollateralProvider(second).get(fmspc, "platform", TeeKind.TDX)
        assert second.requests == 0
    assert again.tcb_info
    assert len(fake.log) == 4


def test_429_honors_retry_after_seconds(
    pcs: tuple[FakePcs, str], pki: DcapPki, tmp_path: Path
) -> None:
    fake, url = pcs
    path = "/tdx/certification/v4/qe/identity?update=standard"
    fake.script[path] = [(429, {"Retry-After": "7"}), (429, {"Retry-After": "3"})]
    sleeps: list[float] = []
    with _client(url, tmp_path, sleeps) as client:
        body, chain = client.qe_identity(TeeKind.TDX)
    assert b"enclaveIdentity" in body and "BEGIN CERTIFICATE" in chain
    assert sleeps == [7.0, 3.0]  # Retry-After wins over the 1 s / 2 s back-off
    assert fake.log.count(path) == 3


def test_429_honors_retry_after_http_date(pcs: tuple[FakePcs, str], tmp_path: Path) -> None:
    fake, url = pcs
    when = format_datetime(NOW + timedelta(seconds=12), usegmt=True)
    fake.script["/rootcrl.der"] = [(429, {"Retry-After": when})]
    sleeps: list[float] = []
    with _client(url, tmp_path, sleeps) as client:
        assert client.root_ca_crl()[:1] == b"\x30"
    assert sleeps == [12.0]


def test_429_without_retry_after_backs_off_exponentially(
    pcs: tuple[FakePcs, str], tmp_path: Path
) -> None:
    fake, url = pcs
    fake.script["/rootcrl.der"] = [(429, {}), (429, {}), (429, {}), (503, {})]
    sleeps: list[float] = []
    with _client(
        url, tmp_path, sleeps, retry=RetryPolicy(jitter=0, attempts=6, base_delay=0.5)
    ) as client:
        client.root_ca_crl()
    assert sleeps == [0.5, 1.0, 2.0, 4.0]


def test_429_forever_gives_up(pcs: tuple[FakePcs, str], tmp_path: Path) -> None:
    fake, url = pcs
    fake.script["/rootcrl.der"] = [(429, {"Retry-After": "1"})] * 10
    sleeps: list[float] = []
    with (
        _client(url, tmp_path, sleeps, retry=RetryPolicy(jitter=0, attempts=3)) as client,
        pytest.raises(CollateralUnavailable, match="HTTP 429 after 3 attempts"),
    ):
        client.root_ca_crl()
    assert len(sleeps) == 2


def test_retry_after_beyond_limit_is_unavailable_at_once(
    pcs: tuple[FakePcs, str], tmp_path: Path
) -> None:
    fake, url = pcs
    fake.script["/rootcrl.der"] = [(429, {"Retry-After": "86400"})]
    sleeps: list[float] = []
    with (
        _client(url, tmp_path, sleeps) as client,
        pytest.raises(CollateralUnavailable, match="Retry-After"),
    ):
        client.root_ca_crl()
    assert sleeps == []


def test_404_is_not_retried(pcs: tuple[FakePcs, str], tmp_path: Path) -> None:
    fake, url = pcs
    sleeps: list[float] = []
    with (
        _client(url, tmp_path, sleeps) as client,
        pytest.raises(CollateralUnavailable, match="HTTP 404"),
    ):
        client.tcb_info(TeeKind.SGX, "00906ED50000")
    assert sleeps == [] and len(fake.log) == 1


def test_stale_cache_serves_when_pcs_is_down(
    pcs: tuple[FakePcs, str], pki: DcapPki, tmp_path: Path
) -> None:
    fake, url = pcs
    fmspc = pki.facts.fmspc.hex()
    with _client(url, tmp_path) as client:
        client.tcb_info(TeeKind.TDX, fmspc)
    path = f"/tdx/certification/v4/tcb?fmspc={fmspc.upper()}"
    fake.script[path] = [(503, {})] * 10
    later = NOW + timedelta(days=2)  # past max_age (24 h), before nextUpdate (30 days)
    with _client(url, tmp_path, now=later, retry=RetryPolicy(jitter=0, attempts=2)) as client:
        body, _ = client.tcb_info(TeeKind.TDX, fmspc)
        assert client.requests == 2
    assert b"tcbInfo" in body
    much_later = NOW + timedelta(days=40)  # the document itself has expired
    with (
        _client(url, tmp_path, now=much_later, retry=RetryPolicy(jitter=0, attempts=2)) as client,
        pytest.raises(CollateralUnavailable, match="HTTP 503"),
    ):
        client.tcb_info(TeeKind.TDX, fmspc)


def test_expired_cache_entry_is_refetched(pcs: tuple[FakePcs, str], tmp_path: Path) -> None:
    fake, url = pcs
    with _client(url, tmp_path) as client:
        client.root_ca_crl()
    with _client(url, tmp_path, now=NOW + timedelta(hours=25)) as client:
        client.root_ca_crl()
        assert client.requests == 1
    assert fake.log.count("/rootcrl.der") == 2


def test_malformed_response_is_not_cached(pcs: tuple[FakePcs, str], tmp_path: Path) -> None:
    fake, url = pcs
    path = "/tdx/certification/v4/qe/identity?update=standard"
    status, headers, _ = fake.routes[path]
    fake.routes[path] = (status, headers, b"<html>maintenance</html>")
    with _client(url, tmp_path) as client, pytest.raises(MalformedCollateral):
        client.qe_identity(TeeKind.TDX)
    assert ContentCache(tmp_path).lookup(url + path) is None


def test_missing_issuer_chain_header(pcs: tuple[FakePcs, str], tmp_path: Path) -> None:
    fake, url = pcs
    path = "/tdx/certification/v4/qe/identity?update=standard"
    _, _, body = fake.routes[path]
    fake.routes[path] = (200, {}, body)
    with (
        _client(url, tmp_path) as client,
        pytest.raises(MalformedCollateral, match="SGX-Enclave-Identity-Issuer-Chain"),
    ):
        client.qe_identity(TeeKind.TDX)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda c: c.tcb_info(TeeKind.SGX, "zz"), "12 hex digits"),
        (lambda c: c.tcb_info(TeeKind.SIM, "00906ED50000"), "no collateral for TEE kind"),
        (lambda c: c.pck_crl("other"), "'platform' or 'processor'"),
    ],
)
def test_bad_requests_are_refused_locally(tmp_path: Path, call: object, match: str) -> None:
    client = _client("http://127.0.0.1:9", tmp_path)
    with pytest.raises(CollateralUnavailable, match=match):
        call(client)  # type: ignore[operator]
    assert client.requests == 0


def test_network_errors_are_retried_then_unavailable(tmp_path: Path) -> None:
    calls: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        raise httpx.ConnectError("connection refused", request=request)

    client = IntelPcsClient(
        "https://pcs.invalid",
        client=httpx.Client(transport=httpx.MockTransport(refuse)),
        cache=ContentCache(tmp_path),
        retry=RetryPolicy(jitter=0, attempts=3),
        sleep=lambda _: None,
        clock=lambda: NOW,
    )
    with pytest.raises(CollateralUnavailable, match="ConnectError"):
        client.qe_identity(TeeKind.SGX)
    assert len(calls) == 3


def test_api_key_is_sent_as_header_only(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(404)

    client = IntelPcsClient(
        "https://pcs.invalid",
        client=httpx.Client(transport=httpx.MockTransport(record)),
        cache=ContentCache(tmp_path),
        api_key="secret-key",
        clock=lambda: NOW,
    )
    with pytest.raises(CollateralUnavailable) as info:
        client.qe_identity(TeeKind.SGX)
    assert seen[0].headers["Ocp-Apim-Subscription-Key"] == "secret-key"
    assert "secret-key" not in str(info.value) and "secret-key" not in str(seen[0].url)


def test_retry_after_parsing() -> None:
    assert retry_after_seconds("5", now=NOW) == 5.0
    assert retry_after_seconds(None, now=NOW) is None
    assert retry_after_seconds("soon", now=NOW) is None
    past = format_datetime(NOW - timedelta(seconds=30), usegmt=True)
    assert retry_after_seconds(past, now=NOW) == 0.0
