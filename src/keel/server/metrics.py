"""GET /metrics: Prometheus text exposition of this gateway process's metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from keel.auth.keys import Principal
from keel.server.deps import ServicesDep, require

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    summary="Prometheus metrics: requests, latency, TTFT, tokens, cost, breakers, trace queue",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def metrics(
    services: ServicesDep, principal: Annotated[Principal, require("metrics:read")]
) -> Response:
    return Response(services.tracing.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
