"""Guard events: requests the guard blocked, flagged or redacted, with each scanner's score
and the (already redacted) content the trace store kept.

Built on the traces' `guard_action` column and the `keel.guard.verdicts` span attribute;
until the store has the column the page says so instead of showing an empty table.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from keel.tracing.service import Tracing
from keel.tracing.store import TraceFilter
from keel.ui.views.traces import flatten, guard_verdicts
from keel.ui.web import Console, UiRoute, db, page, ui_require

router = APIRouter(route_class=UiRoute)
PAGE = 25


def _with_verdicts(tracing: Tracing, project_id: str, rows: list[dict[str, Any]]) -> None:
    # One primary-key read per row of a short page: the verdicts live in the spans.
    for row in rows:
        found = tracing.get(project_id, row["trace_id"])
        row["verdicts"] = guard_verdicts(flatten(found["spans"])) if found else []


@router.get("/guard")
async def guard(
    c: Annotated[Console, ui_require("traces:read")],
    action: Annotated[Literal["block", "flag", "redact"], Query()] = "block",
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    tracing = c.services.tracing
    filters = TraceFilter(guard_action=action)
    rows, next_cursor = await db(tracing.list, c.principal.project_id, filters, limit=PAGE,
                                 cursor=cursor)  # fmt: skip
    await db(_with_verdicts, tracing, c.principal.project_id, rows)
    return page(c.request, "guard.html", console=c, rows=rows,
                action=action, next_cursor=next_cursor)  # fmt: skip
