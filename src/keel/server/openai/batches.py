"""/v1/batches: run an uploaded JSONL file as a job (OpenAI Batch API).

Creating a batch checks every line (endpoint, model) before anything is stored, then stores
the job and its items in one transaction: a refused batch leaves nothing behind.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from keel.auth.keys import Principal
from keel.errors import InvalidRequest, NotFound
from keel.jobs.batch import COMPLETION_WINDOWS, ENDPOINTS, KIND, check_batch, parse_lines
from keel.jobs.model import Job
from keel.jobs.system import MAX_LINE_BYTES
from keel.server.deps import PrincipalDep, ServicesDep
from keel.server.openai import batch_items, job_items
from keel.server.openai.files import check_body, job_system
from keel.server.responses import json_response
from keel.server.services import Services

router = APIRouter(prefix="/v1", tags=["openai"])

_STATUS = {
    "queued": "in_progress",
    "running": "in_progress",
    "cancelling": "cancelling",
    "succeeded": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
}


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(description="A file uploaded with purpose=batch")
    endpoint: str = Field(description="/v1/chat/completions, /v1/completions or /v1/embeddings")
    completion_window: str = Field("24h", description="Only 24h")
    metadata: dict[str, str] | None = Field(None, description="Up to 16 key-value pairs")
    output_expires_after: dict[str, Any] | None = Field(
        None, description="Accepted for compatibility; output files are kept until deleted"
    )


def _ts(value: Any) -> int | None:
    return int(value.timestamp()) if value is not None else None


def batch_object(job: Job) -> dict[str, Any]:
    params = job.params
    created = job.created_at
    status = _STATUS.get(job.state, job.state)
    errors = None
    if job.state == "failed" and job.error:
        errors = {"object": "list", "data": [{"code": "failed", "message": job.error}]}
    return {
        "id": job.id,
        "object": "batch",
        "endpoint": params.get("endpoint"),
        "errors": errors,
        "input_file_id": params.get("input_file_id"),
        "completion_window": params.get("completion_window", "24h"),
        "status": status,
        "output_file_id": job.result.get("output_file_id"),
        "error_file_id": job.result.get("error_file_id"),
        "created_at": _ts(created),
        "in_progress_at": _ts(job.started_at),
        "expires_at": _ts(created + timedelta(hours=24)),
        "finalizing_at": None,
        "completed_at": _ts(job.finished_at) if job.state == "succeeded" else None,
        "failed_at": _ts(job.finished_at) if job.state == "failed" else None,
        "expired_at": None,
        "cancelling_at": _ts(job.cancel_requested_at),
        "cancelled_at": _ts(job.finished_at) if job.state == "cancelled" else None,
        "request_counts": {"total": job.total, "completed": job.done, "failed": job.failed},
        "metadata": params.get("metadata"),
    }


def _known_models(services: Services, principal: Principal) -> set[str]:
    cards = services.chat_model_cards(principal.project_id) + services.catalog.embedding_cards()
    names = {str(card["id"]) for card in cards}
    allowed = principal.scopes.routes
    return names if allowed is None else names & set(allowed)


@router.post("/batches", summary="Create a batch from an uploaded file")
async def create_batch(
    body: BatchRequest, services: ServicesDep, principal: PrincipalDep
) -> Response:
    if body.endpoint not in ENDPOINTS:
        raise InvalidRequest(
            f"endpoint '{body.endpoint}' is not supported; use one of {', '.join(ENDPOINTS)}",
            param="endpoint",
        )
    if body.completion_window not in COMPLETION_WINDOWS:
        raise InvalidRequest(
            f"completion_window '{body.completion_window}' is not supported; use 24h",
            param="completion_window",
        )
    if body.metadata is not None and len(body.metadata) > 16:
        raise InvalidRequest("metadata holds at most 16 pairs", param="metadata")
    system = job_system(services)
    info = await asyncio.to_thread(system.files.get, body.input_file_id, principal.project_id)
    if info is None:
        raise NotFound(
            f"no file '{body.input_file_id}' in this project; upload it with POST /v1/files "
            "(purpose=batch) and pass its id",
            param="input_file_id",
            code="file_not_found",
        )
    if info.purpose != "batch":
        raise InvalidRequest(
            f"file '{info.id}' has purpose '{info.purpose}'; a batch reads a file uploaded with "
            "purpose=batch",
            param="input_file_id",
        )
    content = await asyncio.to_thread(system.files.content, info.id, principal.project_id)
    if content is None:
        raise NotFound(f"file '{info.id}' was deleted", param="input_file_id")
    lines = await asyncio.to_thread(
        parse_lines, content, max_line_bytes=MAX_LINE_BYTES, check_body=check_body
    )
    check_batch(lines, body.endpoint, _known_models(services, principal))
    params = {
        "input_file_id": info.id,
        "endpoint": body.endpoint,
        "completion_window": body.completion_window,
        "metadata": body.metadata,
    }
    items = [(line.custom_id, {"url": line.url, "body": line.body}) for line in lines]
    job = await asyncio.to_thread(
        system.store.create, KIND, principal.project_id, principal.key_id, params, items
    )
    system.executor.wake()
    return json_response(batch_object(job))


async def _batch(services: Services, principal: Principal, batch_id: str) -> Job:
    job = await asyncio.to_thread(job_system(services).store.get, batch_id, principal.project_id)
    if job is None or job.kind != KIND:
        raise NotFound(
            f"no batch '{batch_id}' in this project; list them with GET /v1/batches",
            param="batch_id",
            code="batch_not_found",
        )
    return job


@router.get("/batches/{batch_id}", summary="A batch's status and counts")
async def get_batch(services: ServicesDep, principal: PrincipalDep, batch_id: str) -> Response:
    return json_response(batch_object(await _batch(services, principal, batch_id)))


@router.get("/batches", summary="List batches, newest first")
async def list_batches(
    services: ServicesDep,
    principal: PrincipalDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Response:
    jobs, more = await asyncio.to_thread(
        job_system(services).store.page, principal.project_id, kind=KIND, after=after, limit=limit
    )
    data = [batch_object(job) for job in jobs]
    return json_response(
        {
            "object": "list",
            "data": data,
            "has_more": more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


@router.post("/batches/{batch_id}/cancel", summary="Cancel a batch: no new line starts")
async def cancel_batch(services: ServicesDep, principal: PrincipalDep, batch_id: str) -> Response:
    await _batch(services, principal, batch_id)
    system = job_system(services)
    job = await asyncio.to_thread(system.store.request_cancel, batch_id, principal.project_id)
    assert job is not None
    system.executor.cancelled(batch_id)
    return json_response(batch_object(job))


# The item routes of the Ray executor's actors: batch lines under /v1/batches
# (batch_items.py), other jobs' items under /v1/jobs (job_items.py).
router.include_router(batch_items.router)
router.include_router(job_items.router)
