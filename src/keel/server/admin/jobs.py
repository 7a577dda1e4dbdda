"""/api/jobs: every job of the caller's project (batches and the kinds to come) with its
progress, item counts and events; cancelling one."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query

from keel.auth.keys import Principal
from keel.errors import NotFound
from keel.jobs.model import Event, Job
from keel.server.deps import ServicesDep, require
from keel.server.openai.files import job_system
from keel.server.services import Services

router = APIRouter(tags=["jobs"])


def _ts(value: Any) -> float | None:
    return value.timestamp() if value is not None else None


def job_view(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": job.kind,
        "project_id": job.project_id,
        "key_id": job.key_id,
        "state": job.state,
        "progress": job.progress().as_dict(),
        "params": job.params,
        "result": job.result,
        "error": job.error,
        "created_at": _ts(job.created_at),
        "started_at": _ts(job.started_at),
        "cancel_requested_at": _ts(job.cancel_requested_at),
        "finished_at": _ts(job.finished_at),
    }


def event_view(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": event.at.timestamp(),
        "level": event.level,
        "message": event.message,
        "data": event.data,
    }


async def _job(services: Services, principal: Principal, job_id: str) -> Job:
    job = await asyncio.to_thread(job_system(services).store.get, job_id, principal.project_id)
    if job is None:
        raise NotFound(
            f"no job '{job_id}' in this project; list them with GET /api/jobs", param="job_id"
        )
    return job


@router.get("/jobs", summary="Jobs of your project, newest first")
async def list_jobs(
    services: ServicesDep,
    principal: Annotated[Principal, require("jobs:read")],
    kind: str | None = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    jobs, more = await asyncio.to_thread(
        job_system(services).store.page, principal.project_id, kind=kind, after=after, limit=limit
    )
    return {"data": [job_view(job) for job in jobs], "has_more": more}


@router.get("/jobs/{job_id}", summary="A job: progress, item counts and its events")
async def get_job(
    services: ServicesDep,
    principal: Annotated[Principal, require("jobs:read")],
    job_id: str,
    events_after: int = 0,
) -> dict[str, Any]:
    job = await _job(services, principal, job_id)
    store = job_system(services).store
    counts = await asyncio.to_thread(store.item_counts, job.id)
    events = await asyncio.to_thread(lambda: store.events(job.id, after=events_after, limit=500))
    return {**job_view(job), "items": counts, "events": [event_view(e) for e in events]}


@router.post("/jobs/{job_id}/cancel", summary="Cancel a job: no new item starts")
async def cancel_job(
    services: ServicesDep,
    principal: Annotated[Principal, require("jobs:write")],
    job_id: str,
) -> dict[str, Any]:
    await _job(services, principal, job_id)
    system = job_system(services)
    job = await asyncio.to_thread(system.store.request_cancel, job_id, principal.project_id)
    assert job is not None
    system.executor.cancelled(job_id)
    return job_view(job)
