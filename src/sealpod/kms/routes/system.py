"""System routes: health, readiness, metrics, seal state, the workload CA and the token keys."""

from __future__ import annotations

from enum import Enum

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from sealpod.kms.guard import client_address
from sealpod.kms.metrics import KmsMetrics
from sealpod.kms.models import SealStatus, UnsealRequest
from sealpod.kms.problems import problem
from sealpod.kms.routes.common import Who
from sealpod.kms.settings import KmsSettings
from sealpod.kms.state import SealState

TAGS: list[str | Enum] = ["system"]


def add_system_routes(
    app: FastAPI, state: SealState, metrics: KmsMetrics, settings: KmsSettings
) -> None:
    """Health and seal-state routes (the guard lets the first five through while sealed)."""
    store = state.store

    @app.get("/healthz", tags=TAGS)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=TAGS)
    def readyz() -> Response:
        if state.sealed:
            return problem(503, "kms.sealed", "the KMS is sealed")
        if not store.ping():
            return problem(503, "kms.unavailable", "the database is unreachable")
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", tags=TAGS)
    def metrics_endpoint() -> Response:
        metrics.sealed.set(1 if state.sealed else 0)
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/sys/status", tags=TAGS)
    def sys_status() -> SealStatus:
        return state.status()

    @app.post("/v1/sys/unseal", tags=TAGS)
    def sys_unseal(req: UnsealRequest, request: Request) -> SealStatus:
        return state.submit_share(req.share, actor=client_address(request.scope, settings))

    @app.post("/v1/sys/seal", tags=TAGS, status_code=204)
    def sys_seal(who: Who) -> Response:
        who.require("user.manage")
        with store.transaction() as tx:
            state.audit(tx, kind="kms.seal", actor=who.name, subject="", outcome="ok")
        state.seal()
        return Response(status_code=204)

    @app.get("/v1/ca", tags=TAGS)
    def ca_cert() -> Response:
        return PlainTextResponse(state.keys.ca.bundle_pem(), media_type="application/x-pem-file")

    @app.get("/v1/jwks", tags=TAGS)
    def jwks() -> dict[str, object]:
        return {"keys": state.keys.signer.public_jwks()}
