"""Sealpod errors as RFC 7807 problem JSON: the one place the KMS's HTTP edge translates errors.

``application/problem+json`` with ``type``, ``title``, ``status``, a stable ``code``, ``detail``
and, for refusals, ``violations``: malformed 400, unauthenticated 401, refused or forbidden 403,
missing 404, conflict 409, oversized 413, rate-limited 429, sealed or collateral unavailable
503, internal 500 (with no detail). Problem details never contain a secret value.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

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
from sealpod.kms.models import Finding

log = logging.getLogger("sealpod.kms")
PROBLEM_JSON = "application/problem+json"

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


def json_response(model: BaseModel) -> Response:
    """``model`` as JSON (serialized once, by pydantic; no second validation)."""
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
    """A problem document; ``extra`` adds members (what a 409 conflicts with)."""
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


def internal_error(exc: Exception) -> Response:
    """A bare 500 for an exception nobody expected: its type in the log, nothing in the answer."""
    log.error("internal error: %s", type(exc).__name__)
    return problem(500, "internal", "internal error")
