"""Liveness and readiness probes (the only routes that need no key)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from keel.ray_link import cluster_check
from keel.routing.health import unhealthy_targets
from keel.server.deps import ServicesDep
from keel.server.responses import json_response

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the gateway's event loop answers")
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get(
    "/readyz",
    summary="Readiness: model servers and embedding models are up",
    responses={503: {"description": "Something is starting, restarting or failed"}},
)
async def readyz(services: ServicesDep) -> Response:
    """`targets` lists every upstream target the router has called, with its breaker state,
    last error and failures per minute; `unhealthy` names those whose breaker is open or
    probing. They do not make the gateway unready: it still serves (by failing over), and a
    load balancer that pulled every replica for one dead upstream would stop all traffic.
    Likewise `checks.ray`, where Keel joined a Ray cluster (KEEL_RAY_ADDRESS): its `state`
    is reachable or unreachable; unreachable leaves the gateway serving, degraded."""
    checks = services.readiness()
    ray = await cluster_check()
    if ray is not None:
        checks["ray"] = ray
    ready = all(bool(check["ready"]) for check in checks.values())
    targets = services.router.target_health()
    unhealthy = sorted(unhealthy_targets(services.router))
    status = "ready" if ready else "not ready"
    if ready and (unhealthy or (ray is not None and ray["state"] != "reachable")):
        status = "ready (degraded)"
    return json_response(
        {"status": status, "checks": checks, "targets": targets, "unhealthy": unhealthy},
        200 if ready else 503,
    )
