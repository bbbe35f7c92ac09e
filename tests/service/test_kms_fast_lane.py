"""The guard's fast lane (challenge, attestation, secret read answered without FastAPI's
routing) answers exactly what the declared FastAPI routes answer: the same statuses, problem
codes, violations and response fields, for accepted requests and for every kind of refusal."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from kms_data import MEAS_B, SECRET_VALUES

from sealpod.kms import jwe
from sealpod.kms.store import Store
from sealpod.kms.tokens import make_proof

if TYPE_CHECKING:
    from kms_harness import KmsHarness

pytest_plugins = ["kms_harness"]
pytestmark = pytest.mark.anyio


def shape(r: httpx.Response) -> tuple[int, str, object]:
    """What must be equal across the two modes (values that are random are left out)."""
    body = r.json()
    if r.status_code >= 400:
        codes = [v["code"] for v in body.get("violations", [])]
        return r.status_code, r.headers["content-type"], (body["code"], codes)
    return r.status_code, r.headers["content-type"], sorted(body)


async def scenario(kms: KmsHarness) -> dict[str, tuple[int, str, object]]:
    """Accepted requests and every kind of refusal on the three workload routes."""
    seen: dict[str, tuple[int, str, object]] = {}
    seen["challenge"] = shape(await kms.http.post("/v1/attestation/challenge", json={}))
    seen["challenge-bad-tee"] = shape(
        await kms.http.post("/v1/attestation/challenge", json={"tee": "nope"})
    )
    seen["challenge-not-json"] = shape(
        await kms.http.post(
            "/v1/attestation/challenge", content=b"{", headers={"content-type": "application/json"}
        )
    )
    body, key = await kms.attestation_body(release=["api-key"])
    ok = await kms.http.post("/v1/attestation", json=body)
    seen["attest"] = shape(ok)
    seen["attest-replayed"] = shape(await kms.http.post("/v1/attestation", json=body))
    other, _ = await kms.attestation_body(MEAS_B)
    seen["attest-other-measurement"] = shape(await kms.http.post("/v1/attestation", json=other))
    seen["attest-unknown-field"] = shape(
        await kms.http.post("/v1/attestation", json={**body, "extra": 1})
    )
    broken = {**body, "evidence": {**body["evidence"], "evidence": "AAAA"}}
    seen["attest-bad-evidence"] = shape(await kms.http.post("/v1/attestation", json=broken))
    seen["attest-too-large"] = shape(
        await kms.http.post("/v1/attestation", content=b"x" * (70 * 1024))
    )
    token = ok.json()["token"]
    path = "/v1/secrets/db-password"
    proof = make_proof(key, method="GET", path=path, token=token, now=kms.clock())
    read = await kms.http.get(path, headers={"Authorization": f"Bearer {token}", "DPoP": proof})
    seen["read"] = shape(read)
    assert jwe.decrypt(read.json()["jwe"], key)[0] == SECRET_VALUES["db-password"]
    seen["read-no-token"] = shape(await kms.http.get(path))
    seen["read-no-proof"] = shape(
        await kms.http.get(path, headers={"Authorization": f"Bearer {token}"})
    )
    other_path = "/v1/secrets/other"
    proof = make_proof(key, method="GET", path=other_path, token=token, now=kms.clock())
    seen["read-not-released"] = shape(
        await kms.http.get(other_path, headers={"Authorization": f"Bearer {token}", "DPoP": proof})
    )
    seen["read-traversal"] = shape(await kms.http.get("/v1/secrets/..%2Fx"))
    seen["read-bad-name"] = shape(await kms.http.get("/v1/secrets/a%20b"))
    seen["read-no-name"] = shape(await kms.http.get("/v1/secrets/"))
    return seen


async def test_fast_lane_answers_what_the_fastapi_routes_answer(tmp_path: Path) -> None:
    from kms_harness import running_kms

    results = {}
    for fast_lane in (True, False):
        store = Store.open(f"sqlite:///{tmp_path / f'kms-{fast_lane}.db'}")
        try:
            async with running_kms(store, fast_lane=fast_lane, max_request_bytes=64 * 1024) as h:
                results[fast_lane] = await scenario(h)
        finally:
            store.close()
    assert results[True] == results[False]
    fast = results[True]
    assert fast["attest"][0] == fast["read"][0] == fast["challenge"][0] == 200
    assert fast["attest-replayed"] == (
        403,
        "application/problem+json",
        ("kms.refused", ["nonce_replayed"]),
    )
    assert {fast[k][0] for k in ("challenge-bad-tee", "challenge-not-json", "attest-unknown-field",
                                  "attest-bad-evidence", "read-bad-name")} == {400}  # fmt: skip
    assert fast["attest-too-large"][0] == 413
    assert fast["read-no-token"][0] == fast["read-no-proof"][0] == 401
    assert fast["read-not-released"][0] == 403
    assert fast["read-traversal"][0] == fast["read-no-name"][0] == 404


async def test_unexpected_error_in_the_fast_lane_is_a_bare_500(
    kms: KmsHarness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(*_a: object, **_k: object) -> None:
        raise RuntimeError("detail that must not leak")

    monkeypatch.setattr(kms.app.state.attestation, "challenge", boom)
    r = await kms.http.post("/v1/attestation/challenge", json={"tee": "sgx"})
    assert r.status_code == 500 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "internal" and "detail that must not leak" not in r.text
    assert "internal error: RuntimeError" in caplog.text
    assert "detail that must not leak" not in caplog.text
