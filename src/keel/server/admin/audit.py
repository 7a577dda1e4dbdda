"""GET /api/audit: the project's audit log, newest first."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel

from keel.auth.keys import Principal
from keel.server.deps import ServicesDep, require
from keel.server.responses import json_response

router = APIRouter(tags=["audit"])


class AuditRecord(BaseModel):
    id: int
    at: str
    project_id: str
    actor: str
    action: str
    target_type: str
    target_id: str
    before: object
    after: object
    ip: str | None = None


class AuditPage(BaseModel):
    data: list[AuditRecord]
    next_cursor: int | None


@router.get("/audit", summary="List audit records, newest first", response_model=AuditPage)
async def list_audit(
    services: ServicesDep,
    principal: Annotated[Principal, require("audit:read")],
    target_type: str | None = None,
    target_id: str | None = None,
    action: str | None = None,
    cursor: Annotated[
        int | None, Query(ge=0, le=2**62, description="next_cursor of the last page")
    ] = None,
    after: Annotated[
        int | None, Query(ge=0, le=2**62, description="only records newer than this id")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    entries = await asyncio.to_thread(
        services.audit.list,
        principal.project_id,
        target_type=target_type,
        target_id=target_id,
        action=action,
        before_id=cursor,
        after_id=after,
        limit=limit,
    )
    next_cursor = entries[-1].id if len(entries) == limit else None
    return json_response({"data": [e.as_dict() for e in entries], "next_cursor": next_cursor})
