"""Jobs in the console: every job of the project with a progress bar, its rate and time
left, and one job's events (batches today; ingestion and evaluations as they arrive)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import Response

from keel.server.openai.files import job_system
from keel.ui.web import Console, UiError, UiRoute, db, page, ui_require

router = APIRouter(route_class=UiRoute)

JobId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


@router.get("/jobs")
async def jobs(c: Annotated[Console, ui_require("jobs:read")]) -> Response:
    store = job_system(c.services).store
    found, more = await db(store.page, c.principal.project_id, limit=100)
    return page(c.request, "jobs.html", console=c, jobs=found, more=more)


@router.get("/jobs/{job_id}")
async def job(c: Annotated[Console, ui_require("jobs:read")], job_id: JobId) -> Response:
    store = job_system(c.services).store
    found = await db(store.get, job_id, c.principal.project_id)
    if found is None:
        raise UiError(404, f"no job '{job_id}' in this project")
    events = await db(store.events, job_id, limit=200)
    return page(c.request, "job.html", console=c, job=found, events=events)
