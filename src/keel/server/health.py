"""Liveness and readiness probes (the only routes that need no key)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

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
    checks = services.readiness()
    ready = all(bool(check["ready"]) for check in checks.values())
    return json_response(
        {"status": "ready" if ready else "not ready", "checks": checks}, 200 if ready else 503
    )
