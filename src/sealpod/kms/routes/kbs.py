"""The Trustee KBS protocol's routes (Confidential Containers interop, docs/kms.md)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from fastapi import Body, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from sealpod.kms.guard import client_address
from sealpod.kms.kbs import COOKIE as KBS_COOKIE
from sealpod.kms.kbs import KbsRequest, KbsService
from sealpod.kms.routes.common import AuthHeader, NamePath
from sealpod.kms.settings import KmsSettings

TAGS: list[str | Enum] = ["kbs"]


def add_kbs_routes(app: FastAPI, kbs: KbsService, settings: KmsSettings) -> None:
    """``/kbs/v0/auth``, ``/kbs/v0/attest`` and ``/kbs/v0/resource/...``."""

    def _cookie(response: Response, value: str, max_age: int) -> None:
        response.set_cookie(
            KBS_COOKIE,
            value,
            max_age=max_age,
            path="/kbs",
            httponly=True,
            samesite="strict",
            secure=False,  # the KMS may run behind a TLS-terminating proxy; TLS is its own
        )

    @app.post("/kbs/v0/auth", tags=TAGS)
    def kbs_auth(req: KbsRequest, request: Request) -> Response:
        payload, session = kbs.auth(req, client=client_address(request.scope, settings))
        response = JSONResponse(payload)
        _cookie(response, session, settings.nonce_ttl_secs)
        return response

    @app.post("/kbs/v0/attest", tags=TAGS)
    def kbs_attest(body: Annotated[dict[str, Any], Body()], request: Request) -> Response:
        token, ttl = kbs.attest(
            body,
            session=request.cookies.get(KBS_COOKIE),
            client=client_address(request.scope, settings),
        )
        response = JSONResponse({"token": token})
        _cookie(response, token, ttl)
        return response

    @app.get("/kbs/v0/resource/{repository}/{kind}/{tag}", tags=TAGS)
    def kbs_resource(
        repository: NamePath,
        kind: NamePath,
        tag: NamePath,
        request: Request,
        authorization: AuthHeader = None,
    ) -> dict[str, str]:
        token = request.cookies.get(KBS_COOKIE)
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                token = value.strip()
        return kbs.resource(repository, kind, tag, token=token)
