"""GET /metrics: Prometheus text exposition of this gateway process's metrics.

The metrics cover every project (route names, request and token counts), so they are the
operator's: keys of the `default` project that may read, never keys of other projects.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from keel.auth.keys import DEFAULT_PROJECT, Principal
from keel.errors import PermissionDenied
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


@router.get(
    "/metrics",
    summary="Prometheus metrics of the whole instance (keys of the 'default' project only)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def metrics(
    services: ServicesDep, principal: Annotated[Principal, Depends(operator)]
) -> Response:
    return Response(services.tracing.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
