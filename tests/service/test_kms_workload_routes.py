"""The workload routes (challenge, attestation, secret read): one handler each, declared once,
answering accepted requests and every kind of refusal with the right status, problem code,
violations and response fields; described by the OpenAPI document they are declared in."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from kms_data import MEAS_B, SECRET_VALUES

from sealpod.kms import jwe
from sealpod.kms.store import Store
from sealpod.kms.tokens import make_proof

if TYPE_CHECKING:
    from kms_harness import KmsHarness

pytest_plugins = ["kms_harness"]
pytestmark = pytest.mark.anyio


def shape(r: httpx.Response) -> tuple[int, str, object]:
    """Status, content type and the codes or answer fields (random values left out)."""
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


async def test_every_outcome_of_the_workload_routes(tmp_path: Path) -> None:
    from kms_harness import running_kms

    store = Store.open(f"sqlite:///{tmp_path / 'kms.db'}")
    try:
        async with running_kms(store, max_request_bytes=64 * 1024) as h:
            seen = await scenario(h)
    finally:
        store.close()
    ok, problem = "application/json", "application/problem+json"
    assert seen["challenge"] == (200, ok, ["expires_at", "expires_at_unix", "nonce"])
    assert seen["attest"][:2] == (200, ok)
    assert {"token", "released", "released_jwe", "secrets"} <= set(seen["attest"][2])  # type: ignore[call-overload]
    assert seen["read"] == (200, ok, ["content_type", "jwe", "name", "version"])
    assert seen["attest-replayed"] == (403, problem, ("kms.refused", ["nonce_replayed"]))
    assert seen["attest-other-measurement"] == (
        403,
        problem,
        ("kms.refused", ["measurement_not_allowed"]),
    )
    for key in ("challenge-bad-tee", "challenge-not-json", "attest-unknown-field", "read-bad-name"):
        assert seen[key] == (400, problem, ("malformed", [])), key
    assert seen["attest-bad-evidence"][:2] == (400, problem)
    assert seen["attest-too-large"] == (413, problem, ("too_large", []))
    assert seen["read-no-token"] == seen["read-no-proof"] == (401, problem, ("kms.auth", []))
    assert seen["read-not-released"] == (403, problem, ("kms.forbidden", []))
    assert seen["read-traversal"] == seen["read-no-name"] == (404, problem, ("not_found", []))


async def test_one_handler_per_route(kms: KmsHarness) -> None:
    """Each method and path is declared once, by a route of the app's own router, and the app
    is FastAPI itself (no second dispatcher in front of it)."""
    assert type(kms.app) is FastAPI
    seen: dict[tuple[str, str], int] = {}
    for route in kms.app.routes:
        if isinstance(route, APIRoute):
            for method in route.methods or ():
                seen[(method, route.path)] = seen.get((method, route.path), 0) + 1
    assert {k: n for k, n in seen.items() if n > 1} == {}
    for key in [
        ("POST", "/v1/attestation/challenge"),
        ("POST", "/v1/attestation"),
        ("GET", "/v1/secrets/{name}"),
        ("GET", "/v1/volumes/{name}/counter"),
        ("POST", "/v1/volumes/{name}/counter"),
    ]:
        assert seen.get(key) == 1, key


async def test_openapi_describes_bodies_answers_and_headers(kms: KmsHarness) -> None:
    doc = (await kms.http.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]

    def resolve(ref: str) -> dict[str, object]:
        assert ref.startswith("#/components/schemas/")
        return dict(schemas[ref.rsplit("/", 1)[1]])

    bodies = {
        ("post", "/v1/attestation/challenge"): ("ChallengeRequest", "ChallengeResponse"),
        ("post", "/v1/attestation"): ("AttestationRequest", "AttestationResponse"),
        ("get", "/v1/secrets/{name}"): (None, "SecretRelease"),
        ("post", "/v1/volumes/{name}/counter"): ("VolumeCounterAdvance", "VolumeCounter"),
    }
    for (method, path), (body, answer) in bodies.items():
        op = doc["paths"][path][method]
        ok = op["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok["$ref"].endswith("/" + answer), (path, ok)
        resolve(ok["$ref"])
        if body is not None:
            ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/" + body)
            assert "properties" in resolve(ref)
        else:
            assert {p["name"] for p in op["parameters"]} == {"name", "Authorization", "DPoP"}
    # The attestation body's nested models are there too (every $ref resolves).
    text = json.dumps(doc)
    for ref in set(re.findall(r'"\$ref": "([^"]+)"', text)):
        resolve(ref)
    assert "EvidenceEnvelope" in schemas


async def test_unexpected_error_in_a_workload_route_is_a_bare_500(
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
