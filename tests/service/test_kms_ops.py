"""Operations through the ASGI transport: sealing and Shamir unseal, size and rate limits,
health, readiness, metrics, OpenAPI, and logs free of secrets."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httpx
import pytest
from kms_data import MEAS_A, SECRET_VALUES, START, FakeClock

from sealpod.kms.app import create_app
from sealpod.kms.fakes import FakeVerifier
from sealpod.kms.keys import MasterKey
from sealpod.kms.settings import KmsSettings
from sealpod.kms.shamir import Share
from sealpod.kms.state import initialize
from sealpod.kms.store import Store

if TYPE_CHECKING:
    from kms_harness import KmsHarness

pytest_plugins = ["kms_harness"]
pytestmark = pytest.mark.anyio


class Sealed:
    def __init__(self, http: httpx.AsyncClient, shares: list[str], token: str) -> None:
        self.http, self.shares, self.token = http, shares, token


@pytest.fixture
async def sealed(kms_sqlite_store: Store) -> AsyncIterator[Sealed]:
    """A KMS initialised with 5 shares (threshold 3) that starts sealed."""
    result = initialize(kms_sqlite_store, MasterKey.generate(), shares=5, threshold=3, now=START)
    app = create_app(
        KmsSettings(), verifier=FakeVerifier(), store=kms_sqlite_store, clock=FakeClock()
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://kms"
    ) as http:
        yield Sealed(http, [s.to_text() for s in result.shares], result.admin_token)


# -- sealing -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/attestation/challenge"),
        ("POST", "/v1/attestation"),
        ("GET", "/v1/secrets/db-password"),
        ("GET", "/v1/admin/secrets"),
        ("GET", "/v1/admin/audit"),
        ("GET", "/openapi.json"),
        ("GET", "/v1/ca"),
    ],
)
async def test_sealed_server_answers_503(sealed: Sealed, method: str, path: str) -> None:
    r = await sealed.http.request(method, path, json={})
    assert r.status_code == 503
    assert r.json()["code"] == "kms.sealed"


async def test_sealed_server_still_answers_health_and_status(sealed: Sealed) -> None:
    assert (await sealed.http.get("/healthz")).status_code == 200
    assert (await sealed.http.get("/readyz")).status_code == 503
    status = (await sealed.http.get("/v1/sys/status")).json()
    assert status == {
        "initialized": True, "sealed": True, "threshold": 3, "progress": 0, "key_id": None,
        "mode": "shamir",
    }  # fmt: skip


async def test_unseal_with_threshold_shares(sealed: Sealed) -> None:
    for i, share in enumerate(sealed.shares[1:4], start=1):
        r = await sealed.http.post("/v1/sys/unseal", json={"share": share})
        assert r.status_code == 200, r.text
        assert r.json()["sealed"] is (i < 3)
    assert (await sealed.http.get("/readyz")).status_code == 200
    r = await sealed.http.get(
        "/v1/admin/secrets", headers={"Authorization": f"Bearer {sealed.token}"}
    )
    assert r.status_code == 200


async def test_unseal_refuses_shares_of_another_kms(sealed: Sealed) -> None:
    from sealpod.kms.shamir import split

    foreign = [s.to_text() for s in split(MasterKey.generate().raw, shares=3, threshold=3)]
    for share in foreign[:2]:
        assert (await sealed.http.post("/v1/sys/unseal", json={"share": share})).status_code == 200
    r = await sealed.http.post("/v1/sys/unseal", json={"share": foreign[2]})
    assert r.status_code == 400 and "not this KMS" in r.json()["detail"]
    status = (await sealed.http.get("/v1/sys/status")).json()
    assert status["sealed"] is True and status["progress"] == 0  # the bad set was discarded
    for share in sealed.shares[:3]:
        await sealed.http.post("/v1/sys/unseal", json={"share": share})
    assert (await sealed.http.get("/v1/sys/status")).json()["sealed"] is False


async def test_unseal_refuses_a_mistyped_share(sealed: Sealed) -> None:
    good = Share.from_text(sealed.shares[0])
    bad = good.to_text()[:-1] + ("0" if good.to_text()[-1] != "0" else "1")
    r = await sealed.http.post("/v1/sys/unseal", json={"share": bad})
    assert r.status_code == 400


async def test_seal_again_drops_the_keys(kms: KmsHarness) -> None:
    r = await kms.http.post("/v1/sys/seal", headers=kms.auth())
    assert r.status_code == 204
    assert (await kms.http.get("/v1/admin/secrets", headers=kms.auth())).status_code == 503


def test_wrong_master_key_refused_at_start(kms_sqlite_store: Store) -> None:
    from sealpod.errors import ConfigError

    initialize(kms_sqlite_store, MasterKey.generate(), now=START)
    with pytest.raises(ConfigError, match="not this KMS"):
        create_app(
            KmsSettings(),
            verifier=FakeVerifier(),
            store=kms_sqlite_store,
            master_key=MasterKey.generate(),
        )


def test_second_initialise_conflicts(kms_sqlite_store: Store) -> None:
    from sealpod.errors import KmsConflict

    initialize(kms_sqlite_store, MasterKey.generate(), now=START)
    with pytest.raises(KmsConflict):
        initialize(kms_sqlite_store, MasterKey.generate(), now=START)


# -- limits ----------------------------------------------------------------------------------
async def test_refuses_oversized_request(kms_sqlite_store: Store) -> None:
    from kms_harness import running_kms

    async with running_kms(kms_sqlite_store, max_request_bytes=4096) as kms:
        big = {"value": base64.b64encode(b"x" * 8192).decode()}
        r = await kms.http.put("/v1/admin/secrets/big", json=big, headers=kms.auth())
        assert r.status_code == 413
        assert r.json()["code"] == "too_large"

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
            yield b'{"value": "'
            for _ in range(10):
                yield b"A" * 1024
            yield b'"}'

        r = await kms.http.put(
            "/v1/admin/secrets/big",
            content=chunks(),
            headers={**kms.auth(), "content-type": "application/json"},
        )
        assert r.status_code == 413
        r = await kms.http.get("/v1/admin/secrets", headers=kms.auth())
        assert "big" not in [s["name"] for s in r.json()]


async def test_refuses_oversized_secret_value(kms_sqlite_store: Store) -> None:
    from kms_harness import running_kms

    async with running_kms(kms_sqlite_store, max_secret_bytes=40) as kms:
        r = await kms.http.put(
            "/v1/admin/secrets/s",
            json={"value": base64.b64encode(b"y" * 41).decode()},
            headers=kms.auth(),
        )
        assert r.status_code == 400


async def test_rate_limits_attestation_per_client(kms_sqlite_store: Store) -> None:
    from kms_harness import running_kms

    async with running_kms(kms_sqlite_store, attest_rate_per_sec=0.5, attest_burst=3) as kms:
        statuses = [
            (await kms.http.post("/v1/attestation/challenge", json={"tee": "sgx"})).status_code
            for _ in range(4)
        ]
        assert statuses == [200, 200, 200, 429]
        r = await kms.http.post("/v1/attestation/challenge", json={"tee": "sgx"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["code"] == "rate_limited"
        # admin routes are not rate limited
        assert (await kms.http.get("/v1/admin/secrets", headers=kms.auth())).status_code == 200
        metrics = (await kms.http.get("/metrics")).text
        assert "sealpod_kms_rate_limited_total 2.0" in metrics


# -- health, metrics, OpenAPI ------------------------------------------------------------------
async def test_health_ready_metrics_openapi(kms: KmsHarness) -> None:
    assert (await kms.http.get("/healthz")).json() == {"status": "ok"}
    assert (await kms.http.get("/readyz")).json() == {"status": "ready"}
    await kms.workload.fetch_secrets(kms.backend(), MEAS_A, ["api-key"])  # with the attestation
    session = await kms.workload.attest(kms.backend(), MEAS_A)
    await kms.workload.fetch(session, "api-key")  # a later read with the token
    metrics = (await kms.http.get("/metrics")).text
    assert 'sealpod_kms_attestations_total{outcome="accepted"} 2.0' in metrics
    assert 'sealpod_kms_releases_total{outcome="ok"} 2.0' in metrics
    assert 'route="/v1/secrets/{name}"' in metrics  # route templates, never secret names
    assert "sealpod_kms_sealed 0.0" in metrics
    spec = (await kms.http.get("/openapi.json")).json()
    assert "/v1/attestation" in spec["paths"] and "/v1/secrets/{name}" in spec["paths"]


async def test_no_page_loads_code_from_a_cdn(kms: KmsHarness) -> None:
    # FastAPI's /docs and /redoc pages fetch Swagger UI / ReDoc from a CDN: blank offline.
    for path in ("/docs", "/redoc"):
        r = await kms.http.get(path)
        assert r.status_code == 404 and "cdn" not in r.text.lower()
    assert (await kms.http.get("/openapi.json")).status_code == 200


async def test_unknown_route_is_problem_json(kms: KmsHarness) -> None:
    r = await kms.http.get("/v1/nothing")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


async def test_logs_hold_no_secret_values(
    kms: KmsHarness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    from sealpod.errors import AttestationRefused

    await kms.workload.fetch_secrets(kms.backend(), MEAS_A, ["db-password", "api-key"])
    with pytest.raises(AttestationRefused):
        await kms.workload.attest(kms.backend(debug=True), MEAS_A)
    await kms.http.get("/v1/admin/secrets/db-password/value", headers=kms.auth())
    await kms.http.get("/v1/admin/secrets", headers={"Authorization": "Bearer wrong"})
    text = "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)
    assert "attest accepted" in text and "attest refused" in text
    for value in SECRET_VALUES.values():
        assert value.decode() not in text
        assert base64.b64encode(value).decode() not in text
    assert kms.admin_token not in text
