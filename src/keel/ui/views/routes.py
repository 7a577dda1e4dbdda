"""Routes and deployments: each route's split with controls to change it, promote and roll
back; replica health of local deployments; the providers (whether a key is set, never it)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import Response
from pydantic import ValidationError

from keel.registry.specs import RouteSpec
from keel.routing.health import route_health
from keel.ui.web import Console, UiError, UiRoute, db, page, redirect, ui_require

router = APIRouter(route_class=UiRoute)

Name = Annotated[str, Path(max_length=100)]
WEIGHT_PREFIX = "weight:"


@router.get("/routes")
async def routes(c: Annotated[Console, ui_require("routes:read")]) -> Response:
    registry, project = c.services.registry, c.principal.project_id
    names = [r["name"] for r in await db(registry.list_routes, project)]
    details, models, wanted, providers = await asyncio.gather(
        asyncio.gather(*(db(registry.get_route, project, name) for name in names)),
        db(registry.list_models, project),
        db(registry.list_deployments, project) if c.can("deployments:read") else _nothing(),
        db(registry.list_providers, project) if c.can("providers:read") else _nothing(),
    )
    breakers = c.services.router.breaker_states()
    for route in details:
        route["breakers"] = {ref: breakers.get(ref, "closed") for ref in route["targets"]}
        route["health"] = route_health(c.services.router, route)
        total = sum(route["targets"].values()) or 1
        route["shares"] = {ref: w * 100 / total for ref, w in route["targets"].items()}
    running = {d["model"]: d for d in c.services.deployments.status(project)}
    deployments = [
        {**d, "ready": running.get(d["model"], {}).get("ready", 0),
         "processes": running.get(d["model"], {}).get("replicas", [])}
        for d in wanted
    ]  # fmt: skip
    return page(
        c.request, "routes.html", console=c, routes=details, models=models,
        deployments=deployments, providers=providers,
    )  # fmt: skip


async def _nothing() -> list[Any]:
    return []


def _validated(name: str, targets: dict[str, int]) -> dict[str, int]:
    try:
        RouteSpec(name=name, targets=targets)  # the same checks as the API, same messages
    except ValidationError as exc:
        raise UiError(400, f"invalid split: {exc.errors()[0]['msg']}") from None
    return targets


@router.post("/routes/{name}/split")
async def set_split(c: Annotated[Console, ui_require("routes:write")], name: Name) -> Response:
    form = await c.form()
    targets: dict[str, int] = {}
    fields = [(k.removeprefix(WEIGHT_PREFIX), v) for k, v in form.items()
              if k.startswith(WEIGHT_PREFIX)]  # fmt: skip
    if form.get("add_model", "").strip():
        fields.append((form["add_model"].strip(), form.get("add_weight", "") or "0"))
    for ref, raw in fields:
        if not raw.strip():  # a blank weight takes the target out of the route
            continue
        try:
            targets[ref] = int(raw)
        except ValueError:
            raise UiError(400, f"the weight of {ref} must be a whole number") from None
    await db(c.services.registry.set_split, c.principal.project_id, name,
             _validated(name, targets), c.principal)  # fmt: skip
    return redirect(f"/ui/routes?changed={name}#route-{name}")


@router.post("/routes/{name}/promote")
async def promote(c: Annotated[Console, ui_require("routes:write")], name: Name) -> Response:
    form = await c.form()
    model = form.get("model", "")
    _validated(name, {model: 100})
    await db(c.services.registry.promote, c.principal.project_id, name, model, c.principal)
    return redirect(f"/ui/routes?changed={name}#route-{name}")


@router.post("/routes/{name}/rollback")
async def rollback(c: Annotated[Console, ui_require("routes:write")], name: Name) -> Response:
    form = await c.form()
    if form.get("confirm") != "yes":
        raise UiError(400, "tick the confirmation box to roll back")
    await db(c.services.registry.rollback, c.principal.project_id, name, c.principal)
    return redirect(f"/ui/routes?changed={name}#route-{name}")
