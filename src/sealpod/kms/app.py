"""The KMS HTTP API: ``create_app(settings, *, verifier, store) -> FastAPI``.

The app is assembled from explicit parts (tests pass fakes): the seal state, the attestation,
volume-counter, admin and KBS services, and one module of routes per audience
(:mod:`sealpod.kms.routes`). Every route has exactly one handler, declared once, and the
OpenAPI document (``/openapi.json``) is generated from those declarations.

One pure-ASGI guard (:mod:`sealpod.kms.guard`) in front of the routes enforces the request size
limit, answers 503 while the KMS is sealed (except health, status and unseal), rate-limits the
attestation endpoints and records request metrics. Only the edge translates errors, into RFC
7807 problem JSON (:mod:`sealpod.kms.problems`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from sealpod import __version__
from sealpod.errors import SealpodError
from sealpod.kms.admin import AdminService
from sealpod.kms.guard import Guard
from sealpod.kms.kbs import KbsService
from sealpod.kms.keys import MasterKey
from sealpod.kms.metrics import KmsMetrics
from sealpod.kms.problems import error_response, problem, validation_response
from sealpod.kms.ratelimit import Limiter, RateLimiter
from sealpod.kms.routes.admin import add_admin_routes
from sealpod.kms.routes.kbs import add_kbs_routes
from sealpod.kms.routes.system import add_system_routes
from sealpod.kms.routes.workload import add_body_schemas, add_workload_routes
from sealpod.kms.service import AttestationService, AttestationVerifier
from sealpod.kms.settings import KmsSettings
from sealpod.kms.state import Clock, SealState, utcnow
from sealpod.kms.store import Store
from sealpod.kms.volumes import VolumeCounters

TITLE = "sealpod KMS"
DESCRIPTION = "Attested secret release: challenge, attest, fetch secrets as JWE."


def create_app(
    settings: KmsSettings,
    *,
    verifier: AttestationVerifier,
    store: Store,
    clock: Clock = utcnow,
    master_key: MasterKey | None = None,
    rate_clock: Callable[[], float] = time.monotonic,
    rate_limiter: Limiter | None = None,
) -> FastAPI:
    """Assemble the KMS from explicit parts (tests pass fakes).

    With ``master_key`` the app starts unsealed; otherwise it starts sealed and waits for
    ``POST /v1/sys/unseal`` shares. ``rate_limiter`` replaces the in-process limiter
    (``serve --workers`` shares one).

    Raises:
        ConfigError: ``master_key`` is not this KMS's key.
        KmsUnavailable: ``master_key`` given but the database is not initialised.
    """
    metrics = KmsMetrics()
    state = SealState(store, clock)
    if master_key is not None:
        state.unseal_with_key(master_key)
    attestation = AttestationService(settings, state, verifier, metrics)
    admin = AdminService(settings, state, metrics)
    limiter = rate_limiter or RateLimiter(
        settings.attest_rate_per_sec, settings.attest_burst, rate_clock
    )

    # No Swagger UI / ReDoc pages: FastAPI's load their scripts from a CDN, so they were blank
    # offline (and a KMS should not make browsers fetch third-party code). The API is described
    # by /openapi.json, which any OpenAPI viewer opens (docs/kms.md).
    app = FastAPI(
        title=TITLE, version=__version__, description=DESCRIPTION, docs_url=None, redoc_url=None
    )
    app.state.kms_state = state
    app.state.metrics = metrics
    state.on_seal_change = lambda sealed: metrics.sealed.set(1 if sealed else 0)
    metrics.sealed.set(1 if state.sealed else 0)
    app.state.attestation = attestation
    app.state.admin = admin

    @app.exception_handler(SealpodError)
    async def _sealpod_error(_request: Request, exc: SealpodError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> Response:
        return validation_response(exc.errors())

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http")
        return problem(exc.status_code, code, str(exc.detail))

    # The workload routes first: the router tries routes in order, and these are the hot ones.
    # On the embedded store their service calls run on the event loop (see routes.workload);
    # with PostgreSQL (network round trips) on the thread pool, as every admin route does.
    inline = store.dialect == "sqlite"
    add_workload_routes(app, attestation, VolumeCounters(attestation), settings, inline=inline)
    add_system_routes(app, state, metrics, settings)
    add_kbs_routes(app, KbsService(attestation), settings)
    add_admin_routes(app, admin, attestation)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=TITLE, version=__version__, description=DESCRIPTION, routes=app.routes
            )
            app.openapi_schema = add_body_schemas(document)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(
        Guard,
        settings=settings,
        state=state,
        metrics=metrics,
        limiter=limiter,
    )
    return app
