"""Parameter types shared by the KMS's routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Path, Request

from sealpod.kms.admin import AdminService, Principal
from sealpod.kms.codec import NAME_PATTERN

NamePath = Annotated[str, Path(pattern=NAME_PATTERN)]
AuthHeader = Annotated[str | None, Header()]


def _principal(request: Request, authorization: AuthHeader = None) -> Principal:
    admin: AdminService = request.app.state.admin
    return admin.authenticate(authorization)


#: The admin user a request authenticates as (401 without a valid admin token).
Who = Annotated[Principal, Depends(_principal)]
