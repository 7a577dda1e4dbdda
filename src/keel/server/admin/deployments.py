"""/api/deployments: model versions Keel serves itself, and their replicas' health."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import Response
from pydantic import BaseModel, Field

from keel.auth.keys import Principal
from keel.errors import InvalidRequest
from keel.registry.specs import DeploymentSpec
from keel.server.deps import ServicesDep, require
from keel.server.responses import json_response

router = APIRouter(tags=["deployments"])


class DeploymentStatus(BaseModel):
    model: str
    replicas: int
    on: str = Field("local", description="local (child processes) or ray (Ray actors)")
    ready: int
    state: str = Field(
        description="ready, degraded (some replicas ready), starting, restarting, "
        "crashlooping (any replica) or stopped"
    )
    last_crash: dict[str, Any] | None = Field(
        description="The latest crash of any replica: cause, exit_code, signal, at, log_path "
        "and log_tail"
    )
    processes: list[dict[str, Any]]


@router.get("/deployments", summary="List deployments with each replica's state")
async def list_deployments(
    services: ServicesDep, principal: Annotated[Principal, require("deployments:read")]
) -> list[DeploymentStatus]:
    wanted = await asyncio.to_thread(services.registry.list_deployments, principal.project_id)
    running = {d["model"]: d for d in services.deployments.status(principal.project_id)}
    return [
        DeploymentStatus(
            model=d["model"],
            replicas=d["replicas"],
            on=d.get("on", "local"),
            ready=running.get(d["model"], {}).get("ready", 0),
            state=running.get(d["model"], {}).get("state", "stopped"),
            last_crash=running.get(d["model"], {}).get("last_crash"),
            processes=running.get(d["model"], {}).get("replicas", []),
        )
        for d in wanted
    ]


@router.put(
    "/deployments",
    summary="Deploy a local model version with N replicas (or rescale it)",
)
async def put_deployment(
    spec: DeploymentSpec,
    services: ServicesDep,
    principal: Annotated[Principal, require("deployments:write")],
) -> Response:
    if spec.on == "ray" and not services.settings.ray_address:
        raise InvalidRequest(
            "on: ray needs a Ray cluster, and this Keel has none; start Keel with "
            "KEEL_RAY_ADDRESS=auto (or host:port, ray://host:10001), or deploy with on: local",
            param="on",
        )
    data, changed = await asyncio.to_thread(
        services.registry.put_deployment, principal.project_id, spec, principal
    )
    return json_response({"changed": changed, "data": data})


@router.delete("/deployments/{ref}", summary="Stop serving a model version")
async def delete_deployment(
    ref: Annotated[str, Path(max_length=120)],
    services: ServicesDep,
    principal: Annotated[Principal, require("deployments:write")],
) -> Response:
    await asyncio.to_thread(
        services.registry.delete_deployment, principal.project_id, ref, principal
    )
    return json_response({"changed": True, "data": {"model": ref}})
