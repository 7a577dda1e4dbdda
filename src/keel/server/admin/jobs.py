"""/api/jobs: every job of the caller's project (batches and the kinds to come) with its
progress, item counts and events; cancelling one."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request

from keel.auth.keys import Principal, parse_key
from keel.auth.permissions import allowed
from keel.errors import AuthenticationFailed, InvalidRequest, NotFound, PermissionDenied
from keel.jobs.executor import ItemFailed
from keel.jobs.model import Event, Job
from keel.server.deps import (
    Require,
    ServicesDep,
    authenticate_request,
    bearer_token,
    require,
)
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


class ItemToken(Require):
    """The item route's credential: a token the Ray executor signed for one batch line (see
    keel/jobs/tokens.py), not an API key. The route checks it against the line it carries."""

    def __init__(self) -> None:
        super().__init__("jobs:run_item")

    async def __call__(self, request: Request, services: ServicesDep) -> str:  # type: ignore[override]
        token = bearer_token(request)
        if token is None:
            raise AuthenticationFailed(
                "missing item token; this route runs batch lines for Keel's Ray actors only"
            )
        if parse_key(token) is not None:
            # An API key is checked like on any route, then refused: only item tokens run lines.
            principal = await authenticate_request(request, services, token)
            if not allowed(principal.role, self.permission):
                raise PermissionDenied(
                    f"role '{principal.role}' may not {self.permission}; only Keel's Ray "
                    "executor calls this route"
                )
            raise AuthenticationFailed(
                "this route takes an item token, not an API key; only Keel's Ray executor "
                "calls it, with the token it signed for the line"
            )
        return token


@router.post(
    "/jobs/{job_id}/items/{item_id}/run",
    summary="Run one batch line (called by Keel's Ray actors, with a token signed for it)",
)
async def run_item(
    services: ServicesDep,
    token: Annotated[str, Depends(ItemToken())],
    request: Request,
    job_id: str,
    item_id: int,
) -> dict[str, Any]:
    """The line goes through `Gateway.handle` as the batch's owner; the caller (the executor
    holding the job's lease) records the outcome, so this route writes nothing itself."""
    system = job_system(services)
    body = await request.body()
    key_id = system.signer.verify(token, job_id, item_id, body) if system.signer else None
    if key_id is None:
        raise AuthenticationFailed(
            "the item token does not match this job, item and line; only Keel's Ray "
            "executor calls this route, with the token it signed for the line"
        )
    try:
        line = orjson.loads(body)
        custom_id, payload = line["custom_id"], {"url": line["url"], "body": line["body"]}
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise InvalidRequest(
            "the body is not a batch line {custom_id, url, body}", param="body"
        ) from None
    try:
        result = await system.batch.run_line(job_id, key_id, custom_id, payload)
    except ItemFailed as failure:
        return {"ok": False, **failure.as_dict()}
    return {"ok": True, "result": result}
