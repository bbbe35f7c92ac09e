"""Admin routes: secrets, policies, users, the audit log and key rotation (admin tokens).

Each authenticates the caller (:data:`~sealpod.kms.routes.common.Who`) and hands the rest to
:class:`~sealpod.kms.admin.AdminService`, which checks the caller's role, writes, and audits in
the same transaction. They run on worker threads (FastAPI's ``def`` routes).
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from fastapi import FastAPI, Query
from fastapi.responses import Response

from sealpod.kms.admin import AdminService
from sealpod.kms.models import (
    AuditPage,
    KeyRotate,
    KeyRotated,
    PolicyInfo,
    PolicyPut,
    PolicyTestRequest,
    PolicyTestResult,
    SecretInfo,
    SecretPut,
    SecretRotate,
    SecretValue,
    SecretVersionInfo,
    UserAdd,
    UserCreated,
    UserInfo,
)
from sealpod.kms.routes.common import NamePath, Who
from sealpod.kms.service import AttestationService

TAGS: list[str | Enum] = ["admin"]


def add_admin_routes(app: FastAPI, admin: AdminService, attestation: AttestationService) -> None:
    """The ``/v1/admin`` routes."""

    # -- secrets --------------------------------------------------------------------------------
    @app.get("/v1/admin/secrets", tags=TAGS)
    def list_secrets(who: Who) -> list[SecretInfo]:
        return admin.list_secrets(who)

    @app.put("/v1/admin/secrets/{name}", tags=TAGS, status_code=201)
    def put_secret(name: NamePath, req: SecretPut, who: Who) -> SecretInfo:
        return admin.put_secret(who, name, req)

    @app.post("/v1/admin/secrets/{name}/rotate", tags=TAGS)
    def rotate_secret(name: NamePath, req: SecretRotate, who: Who) -> SecretInfo:
        return admin.rotate_secret(who, name, req)

    @app.get("/v1/admin/secrets/{name}/versions", tags=TAGS)
    def secret_versions(name: NamePath, who: Who) -> list[SecretVersionInfo]:
        return admin.secret_versions(who, name)

    @app.get("/v1/admin/secrets/{name}/value", tags=TAGS)
    def secret_value(
        name: NamePath, who: Who, version: Annotated[int | None, Query(ge=1)] = None
    ) -> SecretValue:
        return admin.get_secret_value(who, name, version)

    @app.delete("/v1/admin/secrets/{name}", tags=TAGS, status_code=204)
    def remove_secret(name: NamePath, who: Who) -> Response:
        admin.remove_secret(who, name)
        return Response(status_code=204)

    # -- policies -------------------------------------------------------------------------------
    @app.get("/v1/admin/policies", tags=TAGS)
    def list_policies(who: Who) -> list[PolicyInfo]:
        return admin.list_policies(who)

    @app.put("/v1/admin/policies/{name}", tags=TAGS)
    def put_policy(name: NamePath, req: PolicyPut, who: Who) -> PolicyInfo:
        return admin.put_policy(who, name, req)

    @app.get("/v1/admin/policies/{name}", tags=TAGS)
    def get_policy(name: NamePath, who: Who) -> PolicyInfo:
        return admin.get_policy(who, name)

    @app.delete("/v1/admin/policies/{name}", tags=TAGS, status_code=204)
    def remove_policy(name: NamePath, who: Who) -> Response:
        admin.remove_policy(who, name)
        return Response(status_code=204)

    @app.post("/v1/admin/policies/{name}/test", tags=TAGS)
    def test_policy(name: NamePath, req: PolicyTestRequest, who: Who) -> PolicyTestResult:
        who.require("policy.read")
        return attestation.test_policy(name, req)

    # -- users, audit and keys ------------------------------------------------------------------
    @app.get("/v1/admin/users", tags=TAGS)
    def list_users(who: Who) -> list[UserInfo]:
        return admin.list_users(who)

    @app.post("/v1/admin/users", tags=TAGS, status_code=201)
    def add_user(req: UserAdd, who: Who) -> UserCreated:
        return admin.add_user(who, req)

    @app.delete("/v1/admin/users/{name}", tags=TAGS, status_code=204)
    def remove_user(name: NamePath, who: Who) -> Response:
        admin.remove_user(who, name)
        return Response(status_code=204)

    @app.get("/v1/admin/audit", tags=TAGS)
    def audit(
        who: Who,
        after: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    ) -> AuditPage:
        return admin.audit_page(who, after=after, limit=limit)

    @app.post("/v1/admin/keys/token-signing/rotate", tags=TAGS)
    def rotate_token_key(who: Who, req: KeyRotate | None = None) -> KeyRotated:
        return admin.rotate_token_key(who, req or KeyRotate())

    @app.post("/v1/admin/keys/ca/rotate", tags=TAGS)
    def rotate_ca(who: Who, req: KeyRotate | None = None) -> KeyRotated:
        return admin.rotate_ca(who, req or KeyRotate())

    @app.get("/v1/admin/audit/verify", tags=TAGS)
    def audit_verify(who: Who) -> dict[str, object]:
        return admin.audit_verify(who).to_json()
