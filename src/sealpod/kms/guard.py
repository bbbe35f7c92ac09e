"""The KMS's one pure-ASGI layer in front of its routes.

For every HTTP request, before any route code: the request size limit (the declared
``Content-Length`` and the bytes actually received), the sealed gate (503 for everything but
health, status and unseal while the KMS is sealed), the per-client rate limit of the
attestation endpoints, and the request metrics (by route template, method and status); and,
for an exception no route expected, a bare 500 problem document.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi.responses import Response

from sealpod.kms.metrics import KmsMetrics
from sealpod.kms.problems import internal_error, problem
from sealpod.kms.ratelimit import Limiter
from sealpod.kms.settings import KmsSettings
from sealpod.kms.state import SealState

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Reachable while sealed: health, readiness, metrics, seal status and unseal.
SEALED_ALLOWED = frozenset({"/healthz", "/readyz", "/metrics", "/v1/sys/status", "/v1/sys/unseal"})
RATE_LIMITED_PREFIXES = ("/v1/attestation", "/v1/sys/unseal", "/kbs/v0/auth", "/kbs/v0/attest")


class _TooLarge(BaseException):
    """Raised from ``receive`` past the size limit. A BaseException so that FastAPI's body
    parser (which turns any Exception into a 400) lets it through to the guard."""


def client_address(scope: Scope, settings: KmsSettings) -> str:
    """The client's address: the first ``X-Forwarded-For`` hop when the settings trust it."""
    if settings.trust_forwarded_for:
        for name, value in scope.get("headers", []):
            if name == b"x-forwarded-for":
                return str(value.decode("latin-1")).split(",")[0].strip()[:64]
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


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
    ) -> None:
        self.app = app
        self.settings = settings
        self.state = state
        self.metrics = metrics
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status_holder = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = int(message["status"])
            await send(message)

        try:
            early = self._early_response(scope, scope.get("path", ""))
            if early is not None:
                await early(scope, receive, send_wrapper)
            else:
                await self._call_limited(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            self.metrics.requests.labels(
                route=getattr(route, "path", None) or "unmatched",
                method=scope.get("method", ""),
                status=str(status_holder[0]),
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
        except Exception as exc:
            # The last resort, for every route: a bare 500 and the exception's type in the log.
            # Answered here, so that it is not re-raised to the server, which would log the
            # traceback (and whatever the exception's text holds).
            if started:
                raise
            await internal_error(exc)(scope, receive, send)
