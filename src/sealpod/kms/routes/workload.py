"""The routes an attested workload calls: challenge, attestation, secret reads, volume counters.

These are the KMS's hot routes, so each is a lean FastAPI handler: it takes the raw
:class:`Request`, parses its body once with the strict pydantic model
(``model_validate_json``: JSON-mode strictness, the same 400 for every malformed body),
returns a ready :class:`Response` (FastAPI neither validates nor serializes it again), and
runs the service call on the event loop while the store is the embedded SQLite (handing a
1-3 ms call to the thread pool costs about a quarter of its CPU in thread switches; measured)
or on a worker thread with PostgreSQL. An attestation whose collateral is not cached, which
might fetch it over the network, always ends on a worker thread.

The OpenAPI document describes each route's request body (``openapi_extra`` refers to the
models, which :func:`add_body_schemas` puts in the components), its answer (the route's
``response_model``, used for the document only) and, for workload requests, the
``Authorization``/``DPoP`` headers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.concurrency import run_in_threadpool

from sealpod.errors import SealpodError
from sealpod.kms.codec import NAME_PATTERN, VOLUME_NAME_PATTERN
from sealpod.kms.guard import client_address
from sealpod.kms.models import (
    AttestationRequest,
    AttestationResponse,
    ChallengeRequest,
    ChallengeResponse,
    SecretRelease,
    VolumeCounter,
    VolumeCounterAdvance,
)
from sealpod.kms.problems import error_response, json_response, problem, validation_response
from sealpod.kms.service import AttestationService
from sealpod.kms.settings import KmsSettings
from sealpod.kms.verifier import WouldBlock, no_blocking_io
from sealpod.kms.volumes import VolumeCounters

#: The request bodies these routes parse themselves, for the OpenAPI components.
BODY_MODELS: tuple[type[BaseModel], ...] = (
    ChallengeRequest,
    AttestationRequest,
    VolumeCounterAdvance,
)
_WORKLOAD_AUTH: list[dict[str, Any]] = [
    {"name": "Authorization", "in": "header", "required": True,
     "schema": {"type": "string"}, "description": "Bearer <attestation token>"},
    {"name": "DPoP", "in": "header", "required": True,
     "schema": {"type": "string"},
     "description": "proof of possession signed by the ephemeral key, for this method and path"},
]  # fmt: skip


def _doc(
    body: type[BaseModel] | None = None, *, name: str | None = None, workload_auth: bool = False
) -> dict[str, Any]:
    """``openapi_extra`` of a route: its JSON body, its ``{name}`` (that pattern) and the
    workload's auth headers."""
    extra: dict[str, Any] = {}
    if body is not None:
        ref = {"$ref": f"#/components/schemas/{body.__name__}"}
        extra["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref}}}
    parameters: list[dict[str, Any]] = []
    if name is not None:
        schema = {"type": "string", "pattern": name}
        parameters.append({"name": "name", "in": "path", "required": True, "schema": schema})
    if workload_auth:
        parameters.extend(_WORKLOAD_AUTH)
    if parameters:
        extra["parameters"] = parameters
    return extra


def add_body_schemas(document: dict[str, Any]) -> dict[str, Any]:
    """Put :data:`BODY_MODELS` (and the models they refer to) into an OpenAPI document's
    components, leaving alone any schema FastAPI already put there."""
    _, top = models_json_schema(
        [(m, "validation") for m in BODY_MODELS], ref_template="#/components/schemas/{model}"
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in top.get("$defs", {}).items():
        schemas.setdefault(name, schema)
    return document


M = TypeVar("M", bound=BaseModel)
Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


def _parse(model: type[M], body: bytes) -> M | Response:
    """``body`` parsed as ``model``, or the 400 that says why not."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        return validation_response(exc.errors())
    except SealpodError as exc:  # a model's own check (the evidence envelope's)
        return error_response(exc)


class WorkloadRoute(APIRoute):
    """A route whose endpoint takes the :class:`Request` and returns a :class:`Response`.

    FastAPI's own handler (parameter solving, body parsing, response validation and
    serialization) is replaced by a call of the endpoint, which parses its body and path with
    the models itself; the route's declaration (``response_model``, ``openapi_extra``) still
    makes its OpenAPI operation. FastAPI's documented extension point for this
    (``get_route_handler``), so that the hot routes cost little more than their own work.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = cast(Callable[[Request], Coroutine[Any, Any, Response]], self.endpoint)
        return endpoint


def _path_name(request: Request, pattern: re.Pattern[str], shown: str) -> str | Response:
    """The route's ``{name}``, or the 400 that FastAPI's own path check would give."""
    name = str(request.path_params["name"])
    if pattern.fullmatch(name):
        return name
    return problem(400, "malformed", f"path.name: String should match pattern '{shown}'")


_NAME = re.compile(NAME_PATTERN)
_VOLUME_NAME = re.compile(VOLUME_NAME_PATTERN)


def add_workload_routes(
    app: FastAPI,
    attestation: AttestationService,
    counters: VolumeCounters,
    settings: KmsSettings,
    *,
    inline: bool,
) -> None:
    """Add the workload routes to ``app``; ``inline``: run service calls on the event loop
    (the embedded store).

    Handlers answer sealpod errors themselves (problem JSON); anything else reaches the
    guard's last resort (a bare 500).
    """

    def route(
        method: str, path: str, tag: str, answer: type[BaseModel], extra: dict[str, Any]
    ) -> Callable[[Endpoint], Endpoint]:
        def declare(endpoint: Endpoint) -> Endpoint:
            app.router.add_api_route(
                path,
                endpoint,
                methods=[method],
                tags=[tag],
                response_model=answer,
                openapi_extra=extra,
                route_class_override=WorkloadRoute,
            )
            return endpoint

        return declare

    async def run(fn: Callable[[], BaseModel], *, on_loop: bool = inline) -> Response:
        """``fn``'s model as JSON, or its sealpod error as problem JSON."""
        try:
            return json_response(fn() if on_loop else await run_in_threadpool(fn))
        except SealpodError as exc:
            return error_response(exc)

    @route("POST", "/v1/attestation/challenge", "attestation", ChallengeResponse,
           _doc(ChallengeRequest))  # fmt: skip
    async def challenge(request: Request) -> Response:
        req = _parse(ChallengeRequest, await request.body() or b"{}")
        if isinstance(req, Response):
            return req
        client = client_address(request.scope, settings)
        return await run(lambda: attestation.challenge(req.tee, client=client))

    @route("POST", "/v1/attestation", "attestation", AttestationResponse,
           _doc(AttestationRequest))  # fmt: skip
    async def attest(request: Request) -> Response:
        req = _parse(AttestationRequest, await request.body())
        if isinstance(req, Response):
            return req
        client = client_address(request.scope, settings)

        def attest() -> AttestationResponse:
            return attestation.attest(req, client=client)

        if inline:
            # On the loop while every piece of collateral is cached; a miss (which would fetch
            # over the network) stops before any state changed and runs on a worker thread.
            try:
                with no_blocking_io():
                    return await run(attest)
            except WouldBlock:
                pass
        return await run(attest, on_loop=False)

    @route("GET", "/v1/secrets/{name}", "attestation", SecretRelease,
           _doc(name=NAME_PATTERN, workload_auth=True))  # fmt: skip
    async def fetch_secret(request: Request) -> Response:
        name = _path_name(request, _NAME, NAME_PATTERN)
        if isinstance(name, Response):
            return name
        headers = request.headers
        return await run(
            lambda: attestation.release(
                name,
                authorization=headers.get("authorization"),
                proof=headers.get("dpop"),
                path=request.scope["path"],
            )
        )

    @route("GET", "/v1/volumes/{name}/counter", "volumes", VolumeCounter,
           _doc(name=VOLUME_NAME_PATTERN, workload_auth=True))  # fmt: skip
    async def volume_counter(request: Request) -> Response:
        name = _path_name(request, _VOLUME_NAME, VOLUME_NAME_PATTERN)
        if isinstance(name, Response):
            return name
        headers = request.headers
        return await run(
            lambda: counters.get(
                name,
                authorization=headers.get("authorization"),
                proof=headers.get("dpop"),
                path=request.scope["path"],
            )
        )

    @route("POST", "/v1/volumes/{name}/counter", "volumes", VolumeCounter,
           _doc(VolumeCounterAdvance, name=VOLUME_NAME_PATTERN, workload_auth=True))  # fmt: skip
    async def advance_volume_counter(request: Request) -> Response:
        name = _path_name(request, _VOLUME_NAME, VOLUME_NAME_PATTERN)
        if isinstance(name, Response):
            return name
        req = _parse(VolumeCounterAdvance, await request.body())
        if isinstance(req, Response):
            return req
        headers = request.headers
        return await run(
            lambda: counters.advance(
                name,
                req,
                authorization=headers.get("authorization"),
                proof=headers.get("dpop"),
                path=request.scope["path"],
            )
        )
