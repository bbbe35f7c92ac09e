"""Separation of duties (issue 17 item 1): every role against every authenticated admin route,
as one table, and the exfiltration path an operator had through release policies.

The table is checked against the routes the app declares, so a new admin route cannot be added
without deciding here who may call it.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.routing import APIRoute
from kms_data import MEAS_B, policy_toml

from sealpod.errors import AttestationRefused
from sealpod.kms.routes.common import _principal

if TYPE_CHECKING:
    from kms_harness import KmsHarness

pytest_plugins = ["kms_harness"]
pytestmark = pytest.mark.anyio

ADMIN, OPERATOR, AUDITOR = "admin", "operator", "auditor"
_VALUE = {"value": base64.b64encode(b"new value").decode()}
_POLICY = {"document": policy_toml(measurements=[MEAS_B], secrets=["db-password"])}
_EVIDENCE = "(evidence of workload A, made by the test)"

# (method, route path) -> (who may call it, a concrete path, a body that the route accepts).
ROUTES: dict[tuple[str, str], tuple[frozenset[str], str, Any]] = {
    ("GET", "/v1/admin/secrets"): (frozenset({ADMIN, OPERATOR}), "/v1/admin/secrets", None),
    ("PUT", "/v1/admin/secrets/{name}"): (
        frozenset({ADMIN, OPERATOR}), "/v1/admin/secrets/brand-new", _VALUE,
    ),
    ("POST", "/v1/admin/secrets/{name}/rotate"): (
        frozenset({ADMIN, OPERATOR}), "/v1/admin/secrets/api-key/rotate", _VALUE,
    ),
    ("GET", "/v1/admin/secrets/{name}/versions"): (
        frozenset({ADMIN, OPERATOR}), "/v1/admin/secrets/db-password/versions", None,
    ),
    ("GET", "/v1/admin/secrets/{name}/value"): (
        frozenset({ADMIN}), "/v1/admin/secrets/db-password/value", None,
    ),
    ("DELETE", "/v1/admin/secrets/{name}"): (
        frozenset({ADMIN, OPERATOR}), "/v1/admin/secrets/other", None,
    ),
    ("GET", "/v1/admin/policies"): (frozenset({ADMIN, OPERATOR}), "/v1/admin/policies", None),
    # Writing a policy decides who receives secrets: as strong as reading them.
    ("PUT", "/v1/admin/policies/{name}"): (frozenset({ADMIN}), "/v1/admin/policies/p2", _POLICY),
    ("GET", "/v1/admin/policies/{name}"): (
        frozenset({ADMIN, OPERATOR}), "/v1/admin/policies/workload-a", None,
    ),
    ("DELETE", "/v1/admin/policies/{name}"): (
        frozenset({ADMIN, OPERATOR}), "/v1/admin/policies/workload-a", None,
    ),
    ("POST", "/v1/admin/policies/{name}/test"): (
        frozenset({ADMIN, OPERATOR}), "/v1/admin/policies/workload-a/test", _EVIDENCE,
    ),
    ("GET", "/v1/admin/users"): (frozenset({ADMIN}), "/v1/admin/users", None),
    ("POST", "/v1/admin/users"): (
        frozenset({ADMIN}), "/v1/admin/users", {"name": "new-user", "role": "auditor"},
    ),
    ("DELETE", "/v1/admin/users/{name}"): (frozenset({ADMIN}), "/v1/admin/users/victim", None),
    ("GET", "/v1/admin/audit"): (frozenset({ADMIN, AUDITOR}), "/v1/admin/audit", None),
    ("GET", "/v1/admin/audit/verify"): (
        frozenset({ADMIN, AUDITOR}), "/v1/admin/audit/verify", None,
    ),
    ("POST", "/v1/admin/keys/token-signing/rotate"): (
        frozenset({ADMIN}), "/v1/admin/keys/token-signing/rotate", {"force": True},
    ),
    ("POST", "/v1/admin/keys/ca/rotate"): (
        frozenset({ADMIN}), "/v1/admin/keys/ca/rotate", {"force": True},
    ),
    ("POST", "/v1/sys/seal"): (frozenset({ADMIN}), "/v1/sys/seal", None),
}  # fmt: skip
CALLERS = [ADMIN, OPERATOR, AUDITOR, "no token", "bad token"]


def _authenticated_routes(kms: KmsHarness) -> set[tuple[str, str]]:
    """Every (method, path) whose handler depends on the admin principal."""

    def uses_principal(dependant: Any) -> bool:
        return any(d.call is _principal or uses_principal(d) for d in dependant.dependencies)

    found: set[tuple[str, str]] = set()
    for route in kms.app.routes:
        if isinstance(route, APIRoute):
            authenticated = uses_principal(route.dependant)
            assert authenticated or not route.path.startswith("/v1/admin"), route.path
            if authenticated:
                found |= {(m, route.path) for m in route.methods or ()}
    return found


async def test_the_table_covers_every_authenticated_route(kms: KmsHarness) -> None:
    assert _authenticated_routes(kms) == set(ROUTES)


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("route", sorted(ROUTES), ids=lambda r: f"{r[0]} {r[1]}")
async def test_every_role_on_every_admin_route(
    kms: KmsHarness, route: tuple[str, str], caller: str
) -> None:
    allowed, path, body = ROUTES[route]
    await kms.add_user("victim", AUDITOR)
    if caller == "no token":
        headers: dict[str, str] = {}
    elif caller == "bad token":
        headers = kms.auth(kms.admin_token[:-4] + "AAAA")
    else:
        headers = kms.auth(kms.admin_token if caller == ADMIN else await kms.add_user("c", caller))
    if body == _EVIDENCE:
        evidence = kms.backend().get_evidence(bytes(64)).to_envelope().to_json()
        body = {"evidence": json.loads(evidence)}
    r = await kms.http.request(route[0], path, json=body, headers=headers)
    if caller in ("no token", "bad token"):
        assert r.status_code == 401, r.text
        assert r.json()["code"] == "kms.auth"
    elif caller in allowed:
        assert r.status_code in (200, 201, 204), r.text
    else:
        assert r.status_code == 403, r.text
        assert r.json()["code"] == "kms.forbidden"


async def test_an_operator_cannot_grant_itself_a_secret(kms: KmsHarness) -> None:
    # The exfiltration path: an operator runs an enclave of its own (measurement B), writes a
    # policy releasing db-password to it, attests from it and reads the value.
    operator = await kms.add_user("ops", OPERATOR)
    doc = policy_toml(measurements=[MEAS_B], secrets=["db-password"])
    for name in ("mine", "workload-a"):  # a new policy, or overwriting the owner's
        r = await kms.http.put(
            f"/v1/admin/policies/{name}", json={"document": doc}, headers=kms.auth(operator)
        )
        assert r.status_code == 403 and r.json()["code"] == "kms.forbidden", r.text
    with pytest.raises(AttestationRefused):  # measurement B matches no policy: none released
        await kms.workload.fetch_secrets(kms.backend(MEAS_B), MEAS_B, ["db-password"])
    r = await kms.http.get("/v1/admin/policies/workload-a", headers=kms.auth())
    assert r.json()["document"]["measurements"] != [MEAS_B.hex()]
    refused = [
        rec for rec in await kms.audit() if rec["kind"] == "policy.put" and rec["actor"] == "ops"
    ]
    assert [rec["outcome"] for rec in refused] == ["refused", "refused"]
    assert refused[0]["details"]["secrets"] == ["db-password"]
    assert refused[0]["details"]["codes"] == ["policy_grant_forbidden"]


async def test_policy_changes_are_audited_with_their_grants(kms: KmsHarness) -> None:
    doc = policy_toml(secrets=["db-password", "other"])
    r = await kms.http.put(
        "/v1/admin/policies/workload-a", json={"document": doc}, headers=kms.auth()
    )
    assert r.status_code == 200, r.text
    operator = await kms.add_user("ops", OPERATOR)
    r = await kms.http.delete("/v1/admin/policies/workload-a", headers=kms.auth(operator))
    assert r.status_code == 204
    changes = [r for r in await kms.audit() if r["kind"] in ("policy.put", "policy.rm")]
    put, rm = changes[-2], changes[-1]
    assert put["details"]["secrets"] == ["db-password", "other"]
    assert put["details"]["previous_secrets"] == ["api-key", "db-password"]
    assert put["details"]["added"] == ["other"]
    assert (rm["actor"], rm["details"]["previous_secrets"]) == ("ops", ["db-password", "other"])
