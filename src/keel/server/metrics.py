"""GET /metrics: Prometheus text exposition of this gateway process's metrics.

The metrics cover every project (route names, request and token counts), so they are the
operator's: keys of the `default` project that may read, never keys of other projects.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from keel.auth.keys import DEFAULT_PROJECT, Principal
from keel.errors import PermissionDenied
from keel.routing.router import Router
from keel.server.deps import ServicesDep, require

router = APIRouter(tags=["metrics"])

PERMISSION = "metrics:read"


async def operator(principal: Annotated[Principal, require(PERMISSION)]) -> Principal:
    """The caller, if it may read the whole instance's metrics; else 403."""
    if principal.project_id != DEFAULT_PROJECT:
        raise PermissionDenied(
            f"/metrics shows every project's routes and traffic, so it needs '{PERMISSION}' "
            f"in the '{DEFAULT_PROJECT}' project (the operator's); this key is in project "
            f"'{principal.project_id}'. Scrape it with a viewer key of '{DEFAULT_PROJECT}' "
            "(keel keys create --role viewer); /api/stats and /api/traces show your project's"
        )
    return principal


class TargetHealth(Collector):
    """Each target's breaker, read at scrape time (keel_circuit_breaker_state has its state)."""

    def __init__(self, routing: Router):
        self._router = routing

    def collect(self) -> Iterable[Metric]:
        healthy = GaugeMetricFamily(
            "keel_target_healthy",
            "1 while the target's circuit breaker is closed, 0 while open or probing.",
            labels=["target"],
        )
        per_minute = GaugeMetricFamily(
            "keel_target_failures_per_minute",
            "Failed attempts to the target in the last minute, retried elsewhere or not.",
            labels=["target"],
        )
        consecutive = GaugeMetricFamily(
            "keel_target_consecutive_failures",
            "Failed attempts to the target since its last success.",
            labels=["target"],
        )
        for key, info in self._router.target_health().items():
            healthy.add_metric([key], 1.0 if info["healthy"] else 0.0)
            per_minute.add_metric([key], float(info["failures_per_minute"]))
            consecutive.add_metric([key], float(info["consecutive_failures"]))
        yield from (healthy, per_minute, consecutive)


def target_health_exposition(routing: Router) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TargetHealth(routing))
    return generate_latest(registry)


@router.get(
    "/metrics",
    summary="Prometheus metrics of the whole instance (keys of the 'default' project only)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def metrics(
    services: ServicesDep, principal: Annotated[Principal, Depends(operator)]
) -> Response:
    body = services.tracing.metrics.exposition() + target_health_exposition(services.router)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
