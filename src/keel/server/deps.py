"""Typed FastAPI dependencies: the running services and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from keel.auth.keys import Principal
from keel.errors import AuthenticationFailed
from keel.server.services import Services

_bearer = HTTPBearer(auto_error=False, description="A Keel API key: keel_sk_<id>_<secret>")


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def authenticate(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise AuthenticationFailed(
            "missing API key; send 'Authorization: Bearer keel_sk_…' (the first admin key "
            "is printed at first start and saved in the data dir as admin.key)"
        )
    principal = services.keys.verify_cached(credentials.credentials)
    if principal is None:
        principal = await services.keys.verify(credentials.credentials)
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticate)]


def trace_id(request: Request) -> str:
    value: str = request.scope.get("state", {}).get("trace_id", "")
    return value


TraceIdDep = Annotated[str, Depends(trace_id)]
