"""Typed FastAPI dependencies: the running services and the authenticated caller."""

from __future__ import annotations

import dataclasses
import time
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from keel.auth.keys import Principal
from keel.auth.permissions import allowed
from keel.errors import AuthenticationFailed, PermissionDenied
from keel.server.services import Services

_bearer = HTTPBearer(auto_error=False, description="A Keel API key: keel_sk_<id>_<secret>")


# Dependencies are `async def` on purpose: FastAPI runs plain `def` ones in a worker
# thread, which costs a thread-pool hop per request (measured in docs/benchmarks.md).
async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def bearer_token(request: Request) -> str | None:
    """The key from 'Authorization: Bearer …', parsed as FastAPI's HTTPBearer does."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    return token


async def authenticate_request(
    request: Request, services: Services, token: str | None
) -> Principal:
    """The caller behind the request's API key (`token`); 401 when there is none or it is
    wrong. Routes read the token with FastAPI's HTTPBearer, the hot routes with
    `bearer_token`."""
    if token is None:
        raise AuthenticationFailed(
            "missing API key; send 'Authorization: Bearer keel_sk_…' (the first admin key "
            "is printed at first start and saved in the data dir as admin.key)"
        )
    started_ns = time.time_ns()
    try:
        principal = services.keys.verify_cached(token)
        if principal is None:
            principal = await services.keys.verify(token)
    except AuthenticationFailed:
        # Summarised into one audit record per interval, by source address.
        services.access.usage.rejected(request.client.host if request.client else "unknown")
        raise
    services.access.usage.touch(principal.key_id)  # written in batches, in the background
    request.scope.setdefault("state", {})["auth_ns"] = (started_ns, time.time_ns())  # a span
    return principal


async def authenticate(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    token = credentials.credentials if credentials is not None else None
    return await authenticate_request(request, services, token)


PrincipalDep = Annotated[Principal, Depends(authenticate)]


class Require:
    """Dependency that authenticates and checks one permission; routes declare it so.

    The permission is kept on the instance so tests can read every route's permission
    from the app's route table.
    """

    def __init__(self, permission: str):
        self.permission = permission

    async def __call__(self, request: Request, principal: PrincipalDep) -> Principal:
        if not allowed(principal.role, self.permission):
            raise PermissionDenied(
                f"role '{principal.role}' may not {self.permission}; "
                "ask an admin of the project for a key with a role that may"
            )
        # Control-plane calls carry the caller's address into the audit log.
        return dataclasses.replace(principal, ip=request.client.host if request.client else None)


def require(permission: str) -> Any:
    """`principal: Annotated[Principal, require("prompts:write")]` in an /api handler."""
    return Depends(Require(permission))
