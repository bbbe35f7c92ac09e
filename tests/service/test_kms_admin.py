"""The admin API through the ASGI transport: authentication, roles, secrets, policies, users,
and the audit chain."""

from __future__ import annotations

import base64
import hashlib
from typing import TYPE_CHECKING

import pytest
from kms_data import MEAS_A, SECRET_VALUES, policy_toml
from sqlalchemy import text

if TYPE_CHECKING:
    from kms_harness import KmsHarness

pytest_plugins = ["kms_harness"]
pytestmark = pytest.mark.anyio


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- authentication and roles (each refusal named) ---------------------------------------------
async def test_refuses_missing_admin_token(kms: KmsHarness) -> None:
    r = await kms.http.get("/v1/admin/secrets")
    assert r.status_code == 401
    assert r.json()["code"] == "kms.auth" and r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "header",
    [
        "Bearer nope",
        "Bearer sealpod.0000000000000000.abc",
        "Basic cm9vdDpyb290",
        "Bearer ",
        "Bearer sealpod..x",
    ],
)
async def test_refuses_wrong_admin_token(kms: KmsHarness, header: str) -> None:
    r = await kms.http.get("/v1/admin/secrets", headers={"Authorization": header})
    assert r.status_code == 401


async def test_refuses_token_with_right_id_wrong_secret(kms: KmsHarness) -> None:
    prefix, user_id, secret = kms.admin_token.split(".")
    forged = f"{prefix}.{user_id}.{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}"
    r = await kms.http.get("/v1/admin/secrets", headers=kms.auth(forged))
    assert r.status_code == 401


async def test_only_the_token_hash_is_stored(kms: KmsHarness) -> None:
    with kms.store.engine.connect() as conn:
        hashes = [row[0] for row in conn.execute(text("SELECT token_hash FROM kms_users"))]
    assert hashes == [hashlib.sha256(kms.admin_token.encode()).digest()]


# Every role x every admin route: tests/service/test_kms_roles.py.


async def test_roles_allow_their_own_work(kms_any: KmsHarness) -> None:
    operator = await kms_any.add_user("op", "operator")
    auditor = await kms_any.add_user("aud", "auditor")
    await kms_any.put_secret("op-secret", b"v", token=operator)
    r = await kms_any.http.get("/v1/admin/secrets", headers=kms_any.auth(operator))
    assert "op-secret" in [s["name"] for s in r.json()]
    r = await kms_any.http.put(
        "/v1/admin/policies/op", json={"document": policy_toml()}, headers=kms_any.auth()
    )
    assert r.status_code == 200
    # Operators read, test and remove policies; writing one is an admin's (test_kms_roles).
    r = await kms_any.http.get("/v1/admin/policies/op", headers=kms_any.auth(operator))
    assert r.status_code == 200
    r = await kms_any.http.delete("/v1/admin/policies/op", headers=kms_any.auth(operator))
    assert r.status_code == 204
    r = await kms_any.http.get("/v1/admin/audit", headers=kms_any.auth(auditor))
    assert r.status_code == 200
    assert {rec["kind"] for rec in r.json()["records"]} >= {"secret.put", "policy.put", "policy.rm"}


async def test_removed_user_token_stops_working(kms: KmsHarness) -> None:
    token = await kms.add_user("temp", "operator")
    r = await kms.http.delete("/v1/admin/users/temp", headers=kms.auth())
    assert r.status_code == 204
    r = await kms.http.get("/v1/admin/secrets", headers=kms.auth(token))
    assert r.status_code == 401


async def test_last_admin_cannot_be_removed(kms: KmsHarness) -> None:
    r = await kms.http.delete("/v1/admin/users/root", headers=kms.auth())
    assert r.status_code == 409
    r = await kms.http.get("/v1/admin/users", headers=kms.auth())
    assert [u["name"] for u in r.json()] == ["root"]


async def test_duplicate_user_conflicts(kms: KmsHarness) -> None:
    await kms.add_user("dup", "auditor")
    r = await kms.http.post(
        "/v1/admin/users", json={"name": "dup", "role": "admin"}, headers=kms.auth()
    )
    assert r.status_code == 409


# -- secrets ---------------------------------------------------------------------------------
async def test_secret_lifecycle(kms_any: KmsHarness) -> None:
    await kms_any.put_secret("life", b"v1")
    r = await kms_any.http.put(
        "/v1/admin/secrets/life", json={"value": b64(b"x")}, headers=kms_any.auth()
    )
    assert r.status_code == 409
    r = await kms_any.http.post(
        "/v1/admin/secrets/life/rotate", json={"value": b64(b"v2")}, headers=kms_any.auth()
    )
    assert r.json()["current_version"] == 2
    r = await kms_any.http.get("/v1/admin/secrets/life/versions", headers=kms_any.auth())
    assert [(v["version"], v["current"]) for v in r.json()] == [(1, False), (2, True)]
    r = await kms_any.http.get("/v1/admin/secrets/life/value", headers=kms_any.auth())
    assert base64.b64decode(r.json()["value"]) == b"v2"
    r = await kms_any.http.get("/v1/admin/secrets/life/value?version=1", headers=kms_any.auth())
    assert base64.b64decode(r.json()["value"]) == b"v1"
    r = await kms_any.http.get("/v1/admin/secrets", headers=kms_any.auth())
    listed = {s["name"]: s for s in r.json()}
    assert listed["life"]["current_version"] == 2 and "value" not in listed["life"]
    r = await kms_any.http.delete("/v1/admin/secrets/life", headers=kms_any.auth())
    assert r.status_code == 204
    r = await kms_any.http.get("/v1/admin/secrets/life/value", headers=kms_any.auth())
    assert r.status_code == 404 and r.json()["code"] == "kms.not_found"


async def test_values_are_envelope_encrypted_at_rest(kms: KmsHarness) -> None:
    with kms.store.engine.connect() as conn:
        blobs = b"".join(
            row[0] + row[1]
            for row in conn.execute(text("SELECT wrapped_key, ciphertext FROM kms_secret_versions"))
        )
    for value in SECRET_VALUES.values():
        assert value not in blobs


@pytest.mark.parametrize(
    ("spec", "check"),
    [("bytes:32", lambda v: len(v) == 32), ("password", lambda v: len(v) == 32 and v.isascii())],
)
async def test_generated_secrets(kms: KmsHarness, spec: str, check: object) -> None:
    r = await kms.http.put("/v1/admin/secrets/gen", json={"generate": spec}, headers=kms.auth())
    assert r.status_code == 201, r.text
    r = await kms.http.get("/v1/admin/secrets/gen/value", headers=kms.auth())
    first = base64.b64decode(r.json()["value"])
    assert callable(check) and check(first)
    r = await kms.http.post("/v1/admin/secrets/gen/rotate", json={}, headers=kms.auth())
    assert r.json()["current_version"] == 2
    r = await kms.http.get("/v1/admin/secrets/gen/value", headers=kms.auth())
    assert base64.b64decode(r.json()["value"]) != first


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"value": "AAAA", "generate": "password"},
        {"generate": "bytes:0"},
        {"generate": "bytes:99999"},
        {"generate": "rsa"},
        {"generate": "tls-cert"},
        {"generate": "tls-cert", "dns": ["bad_name!"]},
        {"value": "%%%"},
        {"value": "AAAA", "extra": 1},
    ],
)
async def test_bad_secret_requests_are_400(kms: KmsHarness, body: dict[str, object]) -> None:
    r = await kms.http.put("/v1/admin/secrets/bad", json=body, headers=kms.auth())
    assert r.status_code == 400, r.text


@pytest.mark.parametrize("name", ["-leading", "a/b", "x" * 200, "sp ace", ".hidden"])
async def test_bad_secret_names_are_refused(kms: KmsHarness, name: str) -> None:
    r = await kms.http.put(f"/v1/admin/secrets/{name}", json={"value": "AAAA"}, headers=kms.auth())
    assert r.status_code in (400, 404)


async def test_generated_secret_rotate_takes_no_value(kms: KmsHarness) -> None:
    await kms.http.put("/v1/admin/secrets/g", json={"generate": "password"}, headers=kms.auth())
    r = await kms.http.post(
        "/v1/admin/secrets/g/rotate", json={"value": b64(b"mine")}, headers=kms.auth()
    )
    assert r.status_code == 400


# -- policies ----------------------------------------------------------------------------------
async def test_policy_crud(kms: KmsHarness) -> None:
    r = await kms.http.get("/v1/admin/policies/workload-a", headers=kms.auth())
    body = r.json()
    assert body["secrets"] == ["db-password", "api-key"] and body["token_ttl_secs"] == 60
    assert body["document"]["measurements"] == [MEAS_A.hex()]
    r = await kms.http.get("/v1/admin/policies", headers=kms.auth())
    assert [p["name"] for p in r.json()] == ["workload-a"]
    r = await kms.http.delete("/v1/admin/policies/workload-a", headers=kms.auth())
    assert r.status_code == 204
    r = await kms.http.get("/v1/admin/policies/workload-a", headers=kms.auth())
    assert r.status_code == 404


@pytest.mark.parametrize(
    "document",
    [
        "not toml [",
        'measurements = ["aa"]\n[release]\nsecrets = ["x"]\n',
        "allow_simulation = true\n",
        'typo_field = 1\n[release]\nsecrets = ["x"]\n',
        "[release]\nsecrets = []\n",
        '[release]\nsecrets = ["x"]\ntoken_ttl_secs = 0\n',
        '[release]\nsecrets = ["x"]\nunknown = 1\n',
    ],
)
async def test_malformed_policy_is_400(kms: KmsHarness, document: str) -> None:
    r = await kms.http.put(
        "/v1/admin/policies/bad", json={"document": document}, headers=kms.auth()
    )
    assert r.status_code == 400, r.text
    assert r.json()["code"].startswith("policy")


async def test_policy_json_format(kms: KmsHarness) -> None:
    doc = '{"allow_simulation": true, "release": {"secrets": ["api-key"]}}'
    r = await kms.http.put(
        "/v1/admin/policies/j", json={"document": doc, "format": "json"}, headers=kms.auth()
    )
    assert r.status_code == 200 and r.json()["secrets"] == ["api-key"]


async def test_policy_dry_run_lists_every_violation(kms: KmsHarness) -> None:
    from sealpod.kms.fakes import FakeIdentity, fake_envelope
    from sealpod.verify.claims import TcbStatus

    identity = FakeIdentity(
        measurement=hashlib.sha256(b"nope").digest(), debug=True, tcb_status=TcbStatus.REVOKED
    )
    envelope = fake_envelope(identity, b"")
    r = await kms.http.post(
        "/v1/admin/policies/workload-a/test",
        json={"evidence": {"tee": envelope.tee, "evidence": envelope.evidence}},
        headers=kms.auth(),
    )
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["matched"] is False
    assert {v["code"] for v in result["violations"]} == {
        "measurement_not_allowed",
        "debug_not_allowed",
        "tcb_status_not_accepted",
    }
    good = fake_envelope(FakeIdentity(measurement=MEAS_A), b"")
    r = await kms.http.post(
        "/v1/admin/policies/workload-a/test",
        json={"evidence": {"tee": good.tee, "evidence": good.evidence}},
        headers=kms.auth(),
    )
    assert r.json()["matched"] is True and r.json()["violations"] == []


# -- audit ---------------------------------------------------------------------------------------
async def test_every_admin_change_is_audited(kms: KmsHarness) -> None:
    kinds = [r["kind"] for r in await kms.audit()]
    assert kinds[:2] == ["kms.init", "kms.unseal"]
    assert kinds.count("secret.put") == 3 and kinds.count("policy.put") == 1
    await kms.add_user("a1", "auditor")
    await kms.http.get("/v1/admin/secrets/api-key/value", headers=kms.auth())
    kinds = [r["kind"] for r in await kms.audit()]
    assert kinds[-2:] == ["user.add", "secret.get"]


async def test_audit_records_hold_no_secret_values(kms: KmsHarness) -> None:
    await kms.workload.fetch_secrets(kms.backend(), MEAS_A, ["db-password", "api-key"])
    r = await kms.http.get("/v1/admin/audit", headers=kms.auth())
    for value in SECRET_VALUES.values():
        assert value.decode() not in r.text
        assert b64(value) not in r.text
    assert kms.admin_token not in r.text


async def test_audit_verify_passes_then_detects_an_edit(kms_any: KmsHarness) -> None:
    r = await kms_any.http.get("/v1/admin/audit/verify", headers=kms_any.auth())
    assert r.json()["ok"] is True and r.json()["macs_checked"] is True
    with kms_any.store.engine.begin() as conn:
        conn.execute(text("UPDATE kms_audit SET actor = 'mallory' WHERE seq = 3"))
    r = await kms_any.http.get("/v1/admin/audit/verify", headers=kms_any.auth())
    body = r.json()
    assert body["ok"] is False
    assert {(p["seq"], p["code"]) for p in body["problems"]} == {(3, "edited")}


async def test_audit_verify_detects_a_removed_record(kms: KmsHarness) -> None:
    with kms.store.engine.begin() as conn:
        conn.execute(text("DELETE FROM kms_audit WHERE seq = 2"))
    r = await kms.http.get("/v1/admin/audit/verify", headers=kms.auth())
    assert {p["code"] for p in r.json()["problems"]} >= {"gap", "broken_link"}


async def test_audit_verify_detects_reordered_records(kms: KmsHarness) -> None:
    with kms.store.engine.begin() as conn:
        conn.execute(text("UPDATE kms_audit SET seq = -1 WHERE seq = 3"))
        conn.execute(text("UPDATE kms_audit SET seq = 3 WHERE seq = 4"))
        conn.execute(text("UPDATE kms_audit SET seq = 4 WHERE seq = -1"))
    r = await kms.http.get("/v1/admin/audit/verify", headers=kms.auth())
    assert r.json()["ok"] is False
    assert "broken_link" in {p["code"] for p in r.json()["problems"]}


async def test_audit_verify_detects_a_removed_tail(kms: KmsHarness) -> None:
    with kms.store.engine.begin() as conn:
        last = conn.execute(text("SELECT max(seq) FROM kms_audit")).scalar_one()
        conn.execute(text("DELETE FROM kms_audit WHERE seq = :s"), {"s": last})
    r = await kms.http.get("/v1/admin/audit/verify", headers=kms.auth())
    assert "truncated" in {p["code"] for p in r.json()["problems"]}


async def test_audit_paging(kms: KmsHarness) -> None:
    r = await kms.http.get("/v1/admin/audit?after=2&limit=2", headers=kms.auth())
    page = r.json()
    assert [rec["seq"] for rec in page["records"]] == [3, 4]
    assert page["next_after"] == 4 and page["head_seq"] >= 6
