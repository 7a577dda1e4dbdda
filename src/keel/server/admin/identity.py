"""/api/projects and /api/users: tenants, people and their roles in a project.

Calls act in the caller's project; admins of the default project may name another one
with `?project=`. A project the caller may not see answers 404, as if it did not exist.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel

from keel.auth.identity import MembershipSpec, ProjectSpec, UserSpec
from keel.auth.keys import Principal
from keel.limits.spec import ProjectLimits
from keel.server.deps import ServicesDep, require
from keel.server.responses import json_response

router = APIRouter(tags=["identity"])

ProjectId = Annotated[str, Path(max_length=64, description="Project id.")]
UserId = Annotated[str, Path(max_length=64, description="User id.")]
ProjectQuery = Annotated[
    str | None,
    Query(max_length=64, description="Act in this project (admins of 'default' only)."),
]


class ProjectView(BaseModel):
    id: str
    name: str
    limits: dict[str, Any]
    created_at: str | None
    disabled_at: str | None


class UserView(BaseModel):
    id: str
    name: str
    email: str | None
    role: str | None
    created_at: str | None


def in_project(principal: Principal, project: str | None) -> str:
    return project or principal.project_id


# -- projects ----------------------------------------------------------------------------


@router.get("/projects", summary="List the projects you can see")
async def list_projects(
    services: ServicesDep, principal: Annotated[Principal, require("projects:read")]
) -> list[ProjectView]:
    rows = await asyncio.to_thread(services.access.identity.list_projects, principal)
    return [ProjectView(**row) for row in rows]


@router.post(
    "/projects",
    summary="Create a project (admins of 'default' only)",
    response_model=ProjectView,
    status_code=201,
)
async def create_project(
    spec: ProjectSpec,
    services: ServicesDep,
    principal: Annotated[Principal, require("projects:write")],
) -> Response:
    view = await asyncio.to_thread(services.access.identity.create_project, principal, spec)
    return json_response(view, 201)


@router.get("/projects/{project_id}", summary="Show a project", response_model=ProjectView)
async def get_project(
    project_id: ProjectId,
    services: ServicesDep,
    principal: Annotated[Principal, require("projects:read")],
) -> Response:
    view = await asyncio.to_thread(services.access.identity.get_project, principal, project_id)
    return json_response(view)


@router.put(
    "/projects/{project_id}/limits",
    summary="Set a project's rate limits, route limits and budget (admins of 'default' only)",
    response_model=ProjectView,
)
async def set_project_limits(
    project_id: ProjectId,
    limits: ProjectLimits,
    services: ServicesDep,
    principal: Annotated[Principal, require("projects:write")],
) -> Response:
    view = await asyncio.to_thread(
        services.access.identity.set_project_limits, principal, project_id, limits
    )
    return json_response(view)


@router.delete(
    "/projects/{project_id}",
    summary="Disable a project: revoke all of its keys (admins of 'default' only)",
    response_model=ProjectView,
)
async def disable_project(
    project_id: ProjectId,
    services: ServicesDep,
    principal: Annotated[Principal, require("projects:write")],
) -> Response:
    view = await asyncio.to_thread(services.access.identity.disable_project, principal, project_id)
    return json_response(view)


# -- users and memberships ---------------------------------------------------------------


@router.get("/users", summary="List the project's members and their roles")
async def list_users(
    services: ServicesDep,
    principal: Annotated[Principal, require("users:read")],
    project: ProjectQuery = None,
) -> list[UserView]:
    rows = await asyncio.to_thread(
        services.access.identity.list_users, principal, in_project(principal, project)
    )
    return [UserView(**row) for row in rows]


@router.post(
    "/users",
    summary="Create a user, a member of the project with a role",
    response_model=UserView,
    status_code=201,
)
async def create_user(
    spec: UserSpec,
    services: ServicesDep,
    principal: Annotated[Principal, require("users:write")],
    project: ProjectQuery = None,
) -> Response:
    view = await asyncio.to_thread(
        services.access.identity.create_user, principal, in_project(principal, project), spec
    )
    return json_response(view, 201)


@router.get("/users/{user_id}", summary="Show a member of the project", response_model=UserView)
async def get_user(
    user_id: UserId,
    services: ServicesDep,
    principal: Annotated[Principal, require("users:read")],
    project: ProjectQuery = None,
) -> Response:
    view = await asyncio.to_thread(
        services.access.identity.get_user, principal, in_project(principal, project), user_id
    )
    return json_response(view)


@router.put(
    "/users/{user_id}/membership",
    summary="Add a user to the project, or change their role in it",
    response_model=UserView,
)
async def set_membership(
    user_id: UserId,
    spec: MembershipSpec,
    services: ServicesDep,
    principal: Annotated[Principal, require("users:write")],
    project: ProjectQuery = None,
) -> Response:
    view = await asyncio.to_thread(
        services.access.identity.set_membership,
        principal,
        in_project(principal, project),
        user_id,
        spec.role,
    )
    return json_response(view)


@router.delete(
    "/users/{user_id}/membership",
    summary="Remove a user from the project (their keys for it stop working)",
    response_model=UserView,
)
async def remove_membership(
    user_id: UserId,
    services: ServicesDep,
    principal: Annotated[Principal, require("users:write")],
    project: ProjectQuery = None,
) -> Response:
    view = await asyncio.to_thread(
        services.access.identity.remove_membership,
        principal,
        in_project(principal, project),
        user_id,
    )
    return json_response(view)
