"""/api/providers, /api/models, /api/routes: the model registry and its routes."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from keel.auth.keys import Principal
from keel.registry.specs import (
    ModelVersionSpec,
    ProviderBody,
    ProviderSpec,
    RouteBody,
    RouteSpec,
)
from keel.routing.health import route_health
from keel.server.deps import ServicesDep, require
from keel.server.responses import json_response

router = APIRouter(tags=["registry"])

Name = Annotated[str, Path(max_length=100, description="Name within the project.")]
# `keel apply` says so, so that the audit log tells its changes from hand-made ones.
ChangeSource = Annotated[
    str | None,
    Header(
        alias="X-Keel-Change-Source",
        max_length=20,
        description="'apply' when keel apply makes the change (audit action route.apply).",
    ),
]
IN_USE: dict[int | str, dict[str, Any]] = {
    409: {"description": "Still used (by model versions, routes or deployments)"}
}


class ProviderView(BaseModel):
    name: str
    kind: str
    base_url: str | None
    has_api_key: bool
    api_key_env: str | None = None
    config: dict[str, Any]


class ModelVersionView(BaseModel):
    ref: str
    name: str
    version: int
    provider: str
    upstream_model: str
    params: dict[str, Any]
    context_window: int | None
    input_price_per_m: float
    output_price_per_m: float
    tags: list[str]
    created_at: str


class RouteView(BaseModel):
    name: str
    targets: dict[str, int]
    sticky: str | None
    fallbacks: list[str]
    timeout: float | None
    retries: int
    breaker_failures: int | None = None
    breaker_cooldown: float | None = None
    revision: int
    updated_at: str


class Changed(BaseModel):
    changed: bool
    data: dict[str, Any]


class SplitBody(BaseModel):
    targets: dict[str, int] = Field(
        min_length=1, description="Model version → weight, e.g. {smollm2@1: 90, smollm2@2: 10}."
    )


class PromoteBody(BaseModel):
    model: str = Field(description="Model version that takes all traffic, e.g. smollm2@2.")


def _changed(result: tuple[dict[str, Any], bool], created: bool = False) -> Response:
    data, changed = result
    return json_response({"changed": changed, "data": data}, 201 if created and changed else 200)


# -- providers ---------------------------------------------------------------------------


@router.get("/providers", summary="List providers (keys never shown)")
async def list_providers(
    services: ServicesDep, principal: Annotated[Principal, require("providers:read")]
) -> list[ProviderView]:
    rows = await asyncio.to_thread(services.registry.list_providers, principal.project_id)
    return [ProviderView(**row) for row in rows]


@router.put(
    "/providers/{name}",
    summary="Create or update a provider (its API key is stored encrypted)",
    response_model=Changed,
)
async def put_provider(
    name: Name,
    body: ProviderBody,
    services: ServicesDep,
    principal: Annotated[Principal, require("providers:write")],
    dry_run: Annotated[
        bool, Query(description="Only check it (kind, this server's environment); save nothing.")
    ] = False,
) -> Response:
    spec = ProviderSpec(name=name, **body.model_dump())
    if dry_run:
        services.registry.check_provider(spec)
        return json_response({"changed": False, "data": {"name": name, "checked": True}})
    result = await asyncio.to_thread(
        services.registry.put_provider, principal.project_id, spec, principal
    )
    return _changed(result)


@router.get("/providers/{name}", summary="Show a provider", response_model=ProviderView)
async def get_provider(
    name: Name, services: ServicesDep, principal: Annotated[Principal, require("providers:read")]
) -> Response:
    row = await asyncio.to_thread(services.registry.get_provider, principal.project_id, name)
    return json_response(row)


@router.delete(
    "/providers/{name}",
    summary="Delete a provider that no model version uses (409 names the versions that do)",
    responses=IN_USE,
)
async def delete_provider(
    name: Name, services: ServicesDep, principal: Annotated[Principal, require("providers:write")]
) -> Response:
    before = await asyncio.to_thread(
        services.registry.delete_provider, principal.project_id, name, principal
    )
    return json_response({"deleted": True, "data": before})


# -- model versions ----------------------------------------------------------------------


@router.get("/models", summary="List model versions")
async def list_models(
    services: ServicesDep, principal: Annotated[Principal, require("models:read")]
) -> list[ModelVersionView]:
    rows = await asyncio.to_thread(services.registry.list_models, principal.project_id)
    return [ModelVersionView(**row) for row in rows]


@router.post(
    "/models",
    summary="Add a model version (returns the newest one unchanged if identical)",
    response_model=Changed,
    status_code=201,
)
async def add_model(
    spec: ModelVersionSpec,
    services: ServicesDep,
    principal: Annotated[Principal, require("models:write")],
) -> Response:
    result = await asyncio.to_thread(
        services.registry.add_model_version, principal.project_id, spec, principal
    )
    return _changed(result, created=True)


@router.get(
    "/models/{ref}", summary="Show a model version (name@N)", response_model=ModelVersionView
)
async def get_model(
    ref: Annotated[str, Path(max_length=120)],
    services: ServicesDep,
    principal: Annotated[Principal, require("models:read")],
) -> Response:
    return json_response(
        await asyncio.to_thread(services.registry.get_model, principal.project_id, ref)
    )


@router.delete(
    "/models/{ref}",
    summary="Delete a model version no route or deployment uses (409 names those that do)",
    responses=IN_USE,
)
async def delete_model(
    ref: Annotated[str, Path(max_length=120)],
    services: ServicesDep,
    principal: Annotated[Principal, require("models:write")],
) -> Response:
    before = await asyncio.to_thread(
        services.registry.delete_model_version, principal.project_id, ref, principal
    )
    return json_response({"deleted": True, "data": before})


# -- routes ------------------------------------------------------------------------------


@router.get("/routes", summary="List routes with their current split")
async def list_routes(
    services: ServicesDep, principal: Annotated[Principal, require("routes:read")]
) -> list[RouteView]:
    rows = await asyncio.to_thread(services.registry.list_routes, principal.project_id)
    return [RouteView(**row) for row in rows]


@router.put("/routes/{name}", summary="Create or change a route", response_model=Changed)
async def put_route(
    name: Name,
    body: RouteBody,
    services: ServicesDep,
    principal: Annotated[Principal, require("routes:write")],
    source: ChangeSource = None,
) -> Response:
    spec = RouteSpec(name=name, **body.model_dump())
    action = "route.apply" if source == "apply" else "route.update"
    result = await asyncio.to_thread(
        services.registry.put_route, principal.project_id, spec, principal, action=action
    )
    return _changed(result)


@router.delete("/routes/{name}", summary="Delete a route and its history")
async def delete_route(
    name: Name, services: ServicesDep, principal: Annotated[Principal, require("routes:write")]
) -> Response:
    before = await asyncio.to_thread(
        services.registry.delete_route, principal.project_id, name, principal
    )
    return json_response({"deleted": True, "data": before})


@router.get("/routes/{name}", summary="Show a route, its targets' health and its history")
async def get_route(
    name: Name, services: ServicesDep, principal: Annotated[Principal, require("routes:read")]
) -> Response:
    route = await asyncio.to_thread(services.registry.get_route, principal.project_id, name)
    breakers = services.router.breaker_states()
    route["breakers"] = {ref: breakers.get(ref, "closed") for ref in route["targets"]}
    route["health"] = route_health(services.router, route)
    return json_response(route)


@router.post("/routes/{name}/split", summary="Set a route's weighted split", response_model=Changed)
async def set_split(
    name: Name,
    body: SplitBody,
    services: ServicesDep,
    principal: Annotated[Principal, require("routes:write")],
) -> Response:
    RouteSpec(name=name, targets=body.targets)  # validates refs and weights with clear errors
    result = await asyncio.to_thread(
        services.registry.set_split, principal.project_id, name, body.targets, principal
    )
    return _changed(result)


@router.post(
    "/routes/{name}/promote", summary="Send all of a route's traffic to one model version",
    response_model=Changed,
)  # fmt: skip
async def promote(
    name: Name,
    body: PromoteBody,
    services: ServicesDep,
    principal: Annotated[Principal, require("routes:write")],
) -> Response:
    RouteSpec(name=name, targets={body.model: 100})
    result = await asyncio.to_thread(
        services.registry.promote, principal.project_id, name, body.model, principal
    )
    return _changed(result)


@router.post("/routes/{name}/rollback", summary="Restore the route's previous split")
async def rollback(
    name: Name, services: ServicesDep, principal: Annotated[Principal, require("routes:write")]
) -> Response:
    data = await asyncio.to_thread(
        services.registry.rollback, principal.project_id, name, principal
    )
    return json_response({"changed": True, "data": data})
