"""/api/keys: create (the key is shown once), list, show and revoke API keys."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel

from keel.auth.identity import KeySpec
from keel.auth.keys import Principal
from keel.server.admin.identity import ProjectQuery, in_project
from keel.server.deps import ServicesDep, require
from keel.server.responses import json_response

router = APIRouter(tags=["keys"])

KeyId = Annotated[str, Path(max_length=32, description="Key id (the part after keel_sk_).")]


class KeyView(BaseModel):
    id: str
    name: str
    project_id: str
    user_id: str | None
    role: str
    prefix: str
    scopes: dict[str, Any]
    limits: dict[str, Any]
    created_at: str | None
    expires_at: str | None
    revoked_at: str | None
    last_used_at: str | None


class KeyCreated(BaseModel):
    key: str
    data: KeyView


@router.get("/keys", summary="List the project's API keys (never their secrets)")
async def list_keys(
    services: ServicesDep,
    principal: Annotated[Principal, require("keys:read")],
    project: ProjectQuery = None,
    include_revoked: Annotated[bool, Query(description="Also list revoked keys.")] = False,
) -> list[KeyView]:
    rows = await asyncio.to_thread(
        services.access.identity.list_keys,
        principal,
        in_project(principal, project),
        include_revoked=include_revoked,
    )
    return [KeyView(**row) for row in rows]


@router.post(
    "/keys",
    summary="Create an API key; the key is in this answer only",
    response_model=KeyCreated,
    status_code=201,
)
async def create_key(
    spec: KeySpec,
    services: ServicesDep,
    principal: Annotated[Principal, require("keys:write")],
    project: ProjectQuery = None,
) -> Response:
    view, token = await asyncio.to_thread(
        services.access.identity.create_key, principal, in_project(principal, project), spec
    )
    return json_response({"key": token, "data": view}, 201, headers={"Cache-Control": "no-store"})


@router.get("/keys/{key_id}", summary="Show an API key", response_model=KeyView)
async def get_key(
    key_id: KeyId,
    services: ServicesDep,
    principal: Annotated[Principal, require("keys:read")],
    project: ProjectQuery = None,
) -> Response:
    view = await asyncio.to_thread(
        services.access.identity.get_key, principal, in_project(principal, project), key_id
    )
    return json_response(view)


@router.delete(
    "/keys/{key_id}",
    summary="Revoke an API key (refused from the next request on, in every replica)",
    response_model=KeyView,
)
async def revoke_key(
    key_id: KeyId,
    services: ServicesDep,
    principal: Annotated[Principal, require("keys:write")],
    project: ProjectQuery = None,
) -> Response:
    view = await asyncio.to_thread(
        services.access.identity.revoke_key, principal, in_project(principal, project), key_id
    )
    return json_response(view)
