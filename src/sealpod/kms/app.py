"""The KMS HTTP API: ``create_app(settings, *, verifier, store) -> FastAPI``.

Routes are thin: they parse, call :mod:`sealpod.kms.service` / :mod:`sealpod.kms.admin`, and
render. Only the edge translates errors, into RFC 7807 problem JSON (``application/problem+json``
with ``code`` and, for refusals, ``violations``): malformed 400, unauthenticated 401, refused or
forbidden 403, missing 404, conflict 409, oversized 413, rate-limited 429, sealed or collateral
unavailable 503. Problem details never contain a secret value.

One pure-ASGI guard in front of the routes enforces the request size limit, answers 503 while
the KMS is sealed (except health, status and unseal), and records request metrics.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from sealpod import __version__
from sealpod.errors import (
    AttestationRefused,
    CollateralError,
    ConfigError,
    CryptoError,
    EvidenceError,
    KmsAuthError,
    KmsConflict,
    KmsForbidden,
    KmsNotFound,
    KmsUnavailable,
    PolicyError,
    PolicyViolation,
    SealpodError,
    VerificationError,
    VolumeCounterConflict,
)
from sealpod.kms.admin import AdminService, Principal
from sealpod.kms.kbs import COOKIE as KBS_COOKIE
from sealpod.kms.kbs import KbsRequest, KbsService
from sealpod.kms.keys import MasterKey
from sealpod.kms.metrics import KmsMetrics
from sealpod.kms.models import (
    NAME_PATTERN,
    VOLUME_NAME_PATTERN,
    AttestationRequest,
    AttestationResponse,
    AuditPage,
    ChallengeRequest,
    ChallengeResponse,
    Finding,
    KeyRotate,
    KeyRotated,
    PolicyInfo,
    PolicyPut,
    PolicyTestRequest,
    PolicyTestResult,
    SealStatus,
    SecretInfo,
    SecretPut,
    SecretRelease,
    SecretRotate,
    SecretValue,
    SecretVersionInfo,
    UnsealRequest,
    UserAdd,
    UserCreated,
    UserInfo,
    VolumeCounter,
    VolumeCounterAdvance,
)
from sealpod.kms.ratelimit import Limiter, RateLimiter
from sealpod.kms.service import AttestationService, AttestationVerifier
from sealpod.kms.settings import KmsSettings
from sealpod.kms.state import Clock, SealState, utcnow
from sealpod.kms.store import Store
from sealpod.kms.verifier import WouldBlock, no_blocking_io
from sealpod.kms.volumes import VolumeCounters

log = logging.getLogger("sealpod.kms")
PROBLEM_JSON = "application/problem+json"
#: Reachable while sealed: health, readiness, metrics, seal status and unseal.
SEALED_ALLOWED = frozenset({"/healthz", "/readyz", "/metrics", "/v1/sys/status", "/v1/sys/unseal"})
RATE_LIMITED_PREFIXES = ("/v1/attestation", "/v1/sys/unseal", "/kbs/v0/auth", "/kbs/v0/attest")

NamePath = Annotated[str, Path(pattern=NAME_PATTERN)]
VolumePath = Annotated[str, Path(pattern=VOLUME_NAME_PATTERN)]
AuthHeader = Annotated[str | None, Header()]


def _principal(request: Request, authorization: AuthHeader = None) -> Principal:
    admin: AdminService = request.app.state.admin
    return admin.authenticate(authorization)


Who = Annotated[Principal, Depends(_principal)]


# -- errors → problem JSON ---------------------------------------------------------------------
def status_for(exc: SealpodError) -> int:
    """The HTTP status of a sealpod error (STYLE.md "Services and CLI")."""
    if isinstance(exc, KmsForbidden | AttestationRefused | PolicyViolation | VerificationError):
        return 403
    if isinstance(exc, KmsAuthError):
        return 401
    if isinstance(exc, KmsNotFound):
        return 404
    if isinstance(exc, KmsConflict):
        return 409
    if isinstance(exc, KmsUnavailable | CollateralError):
        return 503  # the KMS or its collateral source cannot serve now; the caller may retry
    if isinstance(exc, EvidenceError | ConfigError | PolicyError):
        return 400
    if isinstance(exc, CryptoError):
        return 500
    return 500


def _json(model: BaseModel) -> Response:
    return Response(model.model_dump_json(), media_type="application/json")


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    violations: list[dict[str, object]] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, object] | None = None,
) -> JSONResponse:
    body: dict[str, object] = {
        **(extra or {}),
        "type": f"urn:sealpod:problem:{code}",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "code": code,
        "detail": detail,
    }
    if violations is not None:
        body["violations"] = violations
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


_TITLES = {
    400: "Malformed request",
    401: "Unauthenticated",
    403: "Refused",
    404: "Not found",
    409: "Conflict",
    413: "Request too large",
    429: "Too many requests",
    500: "Internal error",
    503: "Unavailable",
}


def _violations(exc: SealpodError) -> list[dict[str, object]] | None:
    if isinstance(exc, AttestationRefused | PolicyViolation):
        out: list[dict[str, object]] = []
        for v in exc.violations:
            if isinstance(v, Finding):
                out.append(v.model_dump(exclude_none=True))
            elif hasattr(v, "to_dict"):
                out.append(dict(v.to_dict()))
            else:
                out.append({"code": str(v)})
        return out
    if isinstance(exc, VerificationError):
        return [
            {k: v for k, v in exc.to_dict().items() if k != "message"} | {"message": exc.message}
        ]
    return None


def error_response(exc: SealpodError) -> Response:
    """The problem response for a sealpod error; internal errors say nothing more."""
    status = status_for(exc)
    if status >= 500 and not isinstance(exc, KmsUnavailable | CollateralError):
        log.error("internal error %s: %s", exc.code, exc.message)
        return problem(status, exc.code, "internal error")
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    extra: dict[str, object] | None = None
    if isinstance(exc, VolumeCounterConflict):  # what the KMS holds, for the client to report
        extra = {"volume_id": exc.volume_id, "counter": exc.counter}
    return problem(
        status, exc.code, exc.message, violations=_violations(exc), headers=headers, extra=extra
    )


def validation_response(errors: Sequence[Any]) -> Response:
    """400 naming the first few fields that do not validate (FastAPI's or pydantic's errors)."""
    parts = []
    for err in list(errors)[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
    return problem(400, "malformed", "; ".join(parts) or "request does not validate")


# -- the ASGI guard ----------------------------------------------------------------------------
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _TooLarge(BaseException):
    """Raised from ``receive`` past the size limit. A BaseException so that FastAPI's body
    parser (which turns any Exception into a 400) lets it through to the guard."""


class Guard:
    """Size limit, sealed gate, rate limit and metrics in one cheap pure-ASGI layer."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: KmsSettings,
        state: SealState,
        metrics: KmsMetrics,
        limiter: Limiter,
        fast: FastLane | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.state = state
        self.metrics = metrics
        self.limiter = limiter
        self.fast = fast

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path: str = scope.get("path", "")
        status_holder = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = int(message["status"])
            await send(message)

        template: str | None = None
        try:
            early = self._early_response(scope, path)
            handler = self.fast.match(scope) if self.fast is not None else None
            if early is not None:
                await early(scope, receive, send_wrapper)
            elif handler is not None:
                template = handler.template
                await self._call_fast(handler, scope, receive, send_wrapper)
            else:
                await self._call_limited(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = template or getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(
                route=template, method=scope.get("method", ""), status=str(status_holder[0])
            ).observe(time.perf_counter() - start)

    def _early_response(self, scope: Scope, path: str) -> Response | None:
        limit = self.settings.max_request_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    size = int(value)
                except ValueError:
                    return problem(400, "malformed", "Content-Length is not a number")
                if size > limit:
                    return problem(
                        413, "too_large", f"request body is {size} bytes, expected at most {limit}"
                    )
        if self.state.sealed and path not in SEALED_ALLOWED:
            return problem(
                503, "kms.sealed", "the KMS is sealed; unseal it with `sealpod kms unseal`"
            )
        if path.startswith(RATE_LIMITED_PREFIXES):
            wait = self.limiter.allow(client_address(scope, self.settings))
            if wait > 0:
                self.metrics.rate_limited.inc()
                return problem(
                    429,
                    "rate_limited",
                    "too many attestation requests from this client",
                    headers={"Retry-After": str(max(1, int(wait + 0.999)))},
                )
        return None

    def takes(self, scope: Scope) -> bool:
        """Whether the fast lane answers this request."""
        return self.fast is not None and self.fast.match(scope) is not None

    async def _call_fast(
        self, handler: FastRoute, scope: Scope, receive: Receive, send: Send
    ) -> None:
        limit = self.settings.max_request_bytes
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > limit:
                too_large = problem(413, "too_large", f"request body exceeds {limit} bytes")
                await too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        try:
            response = await handler.call(scope, b"".join(chunks))
        except Exception as exc:  # as FastAPI's last-resort handler: no traceback, no detail
            log.error("internal error: %s", type(exc).__name__)
            response = problem(500, "internal", "internal error")
        await response(scope, receive, send)

    async def _call_limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.settings.max_request_bytes
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        async def track_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, track_send)
        except _TooLarge:
            if started:  # pragma: no cover - bodies are read before responding
                raise
            response = problem(413, "too_large", f"request body exceeds {limit} bytes")
            await response(scope, receive, send)


def client_address(scope: Scope, settings: KmsSettings) -> str:
    if settings.trust_forwarded_for:
        for name, value in scope.get("headers", []):
            if name == b"x-forwarded-for":
                return str(value.decode("latin-1")).split(",")[0].strip()[:64]
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


# -- the fast lane ----------------------------------------------------------------------------
Handler = Callable[[Scope, bytes], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class FastRoute:
    template: str
    call: Handler


class FastLane:
    """The three routes every workload calls (challenge, attestation, secret read), answered
    by the guard itself. Their FastAPI routes stay declared, so the OpenAPI document and the
    behaviour are the same, but a request skips the middleware and routing layers underneath,
    which cost about a third of a secret read's CPU (measured with py-spy).

    Handlers parse with the same pydantic models, answer errors with the same problem JSON
    (:func:`error_response`, :func:`validation_response`) and run on the event loop or a worker
    thread exactly as the routes do.
    """

    def __init__(
        self, attestation: AttestationService, settings: KmsSettings, *, inline: bool
    ) -> None:
        self.attestation, self.settings, self.inline = attestation, settings, inline
        self._challenge = FastRoute("/v1/attestation/challenge", self.challenge)
        self._attest = FastRoute("/v1/attestation", self.attest)
        self._secret = FastRoute("/v1/secrets/{name}", self.secret)

    def match(self, scope: Scope) -> FastRoute | None:
        method, path = scope.get("method"), scope.get("path", "")
        if method == "POST":
            if path == "/v1/attestation":
                return self._attest
            if path == "/v1/attestation/challenge":
                return self._challenge
        elif method == "GET" and path.startswith(SECRET_PREFIX):
            return self._secret
        return None

    async def _run(self, fn: Callable[[], BaseModel], *, inline: bool | None = None) -> Response:
        """``fn``'s model as JSON, or its sealpod error as problem JSON; on the loop or a
        worker thread (``inline`` defaults to the store's choice)."""
        try:
            if self.inline if inline is None else inline:
                return _json(fn())
            return _json(await run_in_threadpool(fn))
        except SealpodError as exc:
            return error_response(exc)

    async def challenge(self, scope: Scope, body: bytes) -> Response:
        try:
            req = ChallengeRequest.model_validate_json(body or b"{}")
        except ValidationError as exc:
            return validation_response(exc.errors())
        client = client_address(scope, self.settings)
        return await self._run(lambda: self.attestation.challenge(req.tee, client=client))

    async def attest(self, scope: Scope, body: bytes) -> Response:
        try:
            req = AttestationRequest.model_validate_json(body)
        except ValidationError as exc:
            return validation_response(exc.errors())
        except SealpodError as exc:  # a model's own check (the evidence envelope's)
            return error_response(exc)
        client = client_address(scope, self.settings)

        def attest() -> AttestationResponse:
            return self.attestation.attest(req, client=client)

        if self.inline:
            # On the loop while every piece of collateral is cached; a miss (which would fetch
            # over the network) stops before any state changed and runs on a worker thread.
            try:
                with no_blocking_io():
                    return await self._run(attest)
            except WouldBlock:
                pass
        return await self._run(attest, inline=False)

    async def secret(self, scope: Scope, _body: bytes) -> Response:
        path: str = scope["path"]
        name = path[len(SECRET_PREFIX) :]
        if not name or "/" in name:  # no route matches, as FastAPI's router would say
            return problem(404, "not_found", "Not Found")
        if not _NAME.fullmatch(name):
            return problem(
                400, "malformed", f"path.name: String should match pattern '{NAME_PATTERN}'"
            )
        authorization = dpop = None
        for key, value in scope.get("headers", ()):
            if key == b"authorization":
                authorization = value.decode("latin-1")
            elif key == b"dpop":
                dpop = value.decode("latin-1")
        return await self._run(
            lambda: self.attestation.release(
                name, authorization=authorization, proof=dpop, path=path
            )
        )


SECRET_PREFIX = "/v1/secrets/"  # noqa: S105 - a URL path, not a password
_NAME = re.compile(NAME_PATTERN)


class KmsApp(FastAPI):
    """FastAPI, with the workload routes answered before its own layers: a request the fast
    lane takes goes straight to a guard (size limit, sealed gate, rate limit, metrics, then the
    handler); every other request takes FastAPI's whole stack, with its own guard."""

    fast_guard: Guard | None = None

    async def app_stack(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guard = self.fast_guard
        if guard is not None and scope["type"] == "http" and guard.takes(scope):
            await guard(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


# -- the app -----------------------------------------------------------------------------------
def create_app(
    settings: KmsSettings,
    *,
    verifier: AttestationVerifier,
    store: Store,
    clock: Clock = utcnow,
    master_key: MasterKey | None = None,
    rate_clock: Callable[[], float] = time.monotonic,
    rate_limiter: Limiter | None = None,
    fast_lane: bool = True,
) -> FastAPI:
    """Assemble the KMS from explicit parts (tests pass fakes).

    With ``master_key`` the app starts unsealed; otherwise it starts sealed and waits for
    ``POST /v1/sys/unseal`` shares. ``fast_lane=False`` serves the workload routes through
    FastAPI's routing too (same answers, more CPU; for tests that compare the two).
    ``rate_limiter`` replaces the in-process limiter (``serve --workers`` shares one).

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

    app = KmsApp(
        title="sealpod KMS",
        version=__version__,
        description="Attested secret release: challenge, attest, fetch secrets as JWE.",
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

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> Response:
        log.error("internal error: %s", type(exc).__name__)
        return problem(500, "internal", "internal error")

    def client_of(request: Request) -> str:
        return client_address(request.scope, settings)

    # -- health and system ------------------------------------------------------------------
    @app.get("/healthz", tags=["system"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["system"])
    def readyz() -> Response:
        if state.sealed:
            return problem(503, "kms.sealed", "the KMS is sealed")
        if not store.ping():
            return problem(503, "kms.unavailable", "the database is unreachable")
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", tags=["system"])
    def metrics_endpoint() -> Response:
        metrics.sealed.set(1 if state.sealed else 0)
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/sys/status", tags=["system"])
    def sys_status() -> SealStatus:
        return state.status()

    @app.post("/v1/sys/unseal", tags=["system"])
    def sys_unseal(req: UnsealRequest, request: Request) -> SealStatus:
        return state.submit_share(req.share, actor=client_of(request))

    @app.post("/v1/sys/seal", tags=["system"], status_code=204)
    def sys_seal(who: Who) -> Response:
        who.require("user.manage")
        with store.transaction() as tx:
            state.audit(tx, kind="kms.seal", actor=who.name, subject="", outcome="ok")
        state.seal()
        return Response(status_code=204)

    @app.get("/v1/ca", tags=["system"])
    def ca_cert() -> Response:
        return PlainTextResponse(state.keys.ca.bundle_pem(), media_type="application/x-pem-file")

    @app.get("/v1/jwks", tags=["system"])
    def jwks() -> dict[str, object]:
        return {"keys": state.keys.signer.public_jwks()}

    # -- attestation ------------------------------------------------------------------------
    # Challenges, attestations and secret reads are 0.3-3 ms of CPU plus one local SQLite
    # transaction. On the embedded store they run on the event loop: handing them to the thread
    # pool costs about a quarter of their CPU time in thread switches (measured). With
    # PostgreSQL (network round trips) they go to the pool, as do attestations whose collateral
    # is not cached (it may be fetched over the network) and every admin route.
    inline = store.dialect == "sqlite"
    fast = FastLane(attestation, settings, inline=inline)

    # The three routes every workload calls are answered by the guard's fast lane (FastLane).
    # They are declared here for the OpenAPI document and, with create_app(fast_lane=False),
    # answer through FastAPI with the same handlers (the tests compare the two).
    @app.post("/v1/attestation/challenge", tags=["attestation"], response_model=ChallengeResponse)
    async def challenge(_req: ChallengeRequest, request: Request) -> Response:
        return await fast.challenge(request.scope, await request.body())

    @app.post("/v1/attestation", tags=["attestation"], response_model=AttestationResponse)
    async def attest(_req: AttestationRequest, request: Request) -> Response:
        return await fast.attest(request.scope, await request.body())

    @app.get(
        "/v1/secrets/{name}",
        tags=["attestation"],
        response_model=SecretRelease,
        openapi_extra={
            "parameters": [
                {"name": "Authorization", "in": "header", "required": True,
                 "schema": {"type": "string"}, "description": "Bearer <attestation token>"},
                {"name": "DPoP", "in": "header", "required": True,
                 "schema": {"type": "string"},
                 "description": "proof of possession signed by the ephemeral key"},
            ]
        },
    )  # fmt: skip
    async def fetch_secret(name: NamePath, request: Request) -> Response:
        return await fast.secret(request.scope, b"")

    # -- volume counters (workload requests, authenticated like secret reads) ---------------
    counters = VolumeCounters(attestation)
    workload_auth = {
        "parameters": [
            {"name": "Authorization", "in": "header", "required": True,
             "schema": {"type": "string"}, "description": "Bearer <attestation token>"},
            {"name": "DPoP", "in": "header", "required": True,
             "schema": {"type": "string"},
             "description": "proof of possession signed by the ephemeral key"},
        ]
    }  # fmt: skip

    @app.get("/v1/volumes/{name}/counter", tags=["volumes"], openapi_extra=workload_auth)
    def volume_counter(name: VolumePath, request: Request) -> VolumeCounter:
        h = request.headers
        return counters.get(
            name,
            authorization=h.get("authorization"),
            proof=h.get("dpop"),
            path=request.url.path,
        )

    @app.post("/v1/volumes/{name}/counter", tags=["volumes"], openapi_extra=workload_auth)
    def advance_volume_counter(
        name: VolumePath, req: VolumeCounterAdvance, request: Request
    ) -> VolumeCounter:
        h = request.headers
        return counters.advance(
            name,
            req,
            authorization=h.get("authorization"),
            proof=h.get("dpop"),
            path=request.url.path,
        )

    # -- Trustee KBS protocol (interop) ---------------------------------------------------
    kbs = KbsService(attestation)

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

    @app.post("/kbs/v0/auth", tags=["kbs"])
    def kbs_auth(req: KbsRequest, request: Request) -> Response:
        payload, session = kbs.auth(req, client=client_of(request))
        response = JSONResponse(payload)
        _cookie(response, session, settings.nonce_ttl_secs)
        return response

    @app.post("/kbs/v0/attest", tags=["kbs"])
    def kbs_attest(body: Annotated[dict[str, Any], Body()], request: Request) -> Response:
        token, ttl = kbs.attest(
            body, session=request.cookies.get(KBS_COOKIE), client=client_of(request)
        )
        response = JSONResponse({"token": token})
        _cookie(response, token, ttl)
        return response

    @app.get("/kbs/v0/resource/{repository}/{kind}/{tag}", tags=["kbs"])
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

    # -- admin: secrets ---------------------------------------------------------------------
    @app.get("/v1/admin/secrets", tags=["admin"])
    def list_secrets(who: Who) -> list[SecretInfo]:
        return admin.list_secrets(who)

    @app.put("/v1/admin/secrets/{name}", tags=["admin"], status_code=201)
    def put_secret(name: NamePath, req: SecretPut, who: Who) -> SecretInfo:
        return admin.put_secret(who, name, req)

    @app.post("/v1/admin/secrets/{name}/rotate", tags=["admin"])
    def rotate_secret(name: NamePath, req: SecretRotate, who: Who) -> SecretInfo:
        return admin.rotate_secret(who, name, req)

    @app.get("/v1/admin/secrets/{name}/versions", tags=["admin"])
    def secret_versions(name: NamePath, who: Who) -> list[SecretVersionInfo]:
        return admin.secret_versions(who, name)

    @app.get("/v1/admin/secrets/{name}/value", tags=["admin"])
    def secret_value(
        name: NamePath, who: Who, version: Annotated[int | None, Query(ge=1)] = None
    ) -> SecretValue:
        return admin.get_secret_value(who, name, version)

    @app.delete("/v1/admin/secrets/{name}", tags=["admin"], status_code=204)
    def remove_secret(name: NamePath, who: Who) -> Response:
        admin.remove_secret(who, name)
        return Response(status_code=204)

    # -- admin: policies --------------------------------------------------------------------
    @app.get("/v1/admin/policies", tags=["admin"])
    def list_policies(who: Who) -> list[PolicyInfo]:
        return admin.list_policies(who)

    @app.put("/v1/admin/policies/{name}", tags=["admin"])
    def put_policy(name: NamePath, req: PolicyPut, who: Who) -> PolicyInfo:
        return admin.put_policy(who, name, req)

    @app.get("/v1/admin/policies/{name}", tags=["admin"])
    def get_policy(name: NamePath, who: Who) -> PolicyInfo:
        return admin.get_policy(who, name)

    @app.delete("/v1/admin/policies/{name}", tags=["admin"], status_code=204)
    def remove_policy(name: NamePath, who: Who) -> Response:
        admin.remove_policy(who, name)
        return Response(status_code=204)

    @app.post("/v1/admin/policies/{name}/test", tags=["admin"])
    def test_policy(name: NamePath, req: PolicyTestRequest, who: Who) -> PolicyTestResult:
        who.require("policy.read")
        return attestation.test_policy(name, req)

    # -- admin: users and audit -------------------------------------------------------------
    @app.get("/v1/admin/users", tags=["admin"])
    def list_users(who: Who) -> list[UserInfo]:
        return admin.list_users(who)

    @app.post("/v1/admin/users", tags=["admin"], status_code=201)
    def add_user(req: UserAdd, who: Who) -> UserCreated:
        return admin.add_user(who, req)

    @app.delete("/v1/admin/users/{name}", tags=["admin"], status_code=204)
    def remove_user(name: NamePath, who: Who) -> Response:
        admin.remove_user(who, name)
        return Response(status_code=204)

    @app.get("/v1/admin/audit", tags=["admin"])
    def audit(
        who: Who,
        after: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    ) -> AuditPage:
        return admin.audit_page(who, after=after, limit=limit)

    @app.post("/v1/admin/keys/token-signing/rotate", tags=["admin"])
    def rotate_token_key(who: Who, req: KeyRotate | None = None) -> KeyRotated:
        return admin.rotate_token_key(who, req or KeyRotate())

    @app.post("/v1/admin/keys/ca/rotate", tags=["admin"])
    def rotate_ca(who: Who, req: KeyRotate | None = None) -> KeyRotated:
        return admin.rotate_ca(who, req or KeyRotate())

    @app.get("/v1/admin/audit/verify", tags=["admin"])
    def audit_verify(who: Who) -> dict[str, object]:
        return admin.audit_verify(who).to_json()

    guard = {"settings": settings, "state": state, "metrics": metrics, "limiter": limiter}
    app.add_middleware(Guard, **guard)  # type: ignore[arg-type]
    if fast_lane:
        app.fast_guard = Guard(app.app_stack, fast=fast, **guard)  # type: ignore[arg-type]
    return app
