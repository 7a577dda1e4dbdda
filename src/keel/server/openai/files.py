"""/v1/files: upload a batch's JSONL input, list, read and delete files (OpenAI Files API).

The job system behind these routes and /v1/batches is built once per app (`job_system`)
and started with the app, so batches left running by a stopped process resume at start.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, File, Form, Query, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from keel.auth.secrets import SecretBox
from keel.calls import CallOp
from keel.errors import InvalidRequest, NotFound, PayloadTooLarge
from keel.finetune.data import parse_examples
from keel.jobs.batch import parse_lines
from keel.jobs.executor import ExecutorOptions
from keel.jobs.files import FileInfo
from keel.jobs.ingest import KIND as INGEST
from keel.jobs.ingest import IngestKind
from keel.jobs.system import MAX_LINE_BYTES, JobMetrics, JobSystem, ray_options
from keel.jobs.tokens import PURPOSE as ITEM_TOKENS
from keel.jobs.tokens import ItemSigner
from keel.knowledge.service import KnowledgeBases
from keel.server.deps import PrincipalDep, ServicesDep
from keel.server.errors import validation_error
from keel.server.openai.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
)
from keel.server.responses import json_response
from keel.server.services import Services

_WIRE: dict[str, type[BaseModel]] = {
    "chat/completions": ChatCompletionRequest,
    "completions": CompletionRequest,
    "embeddings": EmbeddingRequest,
}
PURPOSES = ("batch", "fine-tune")


def job_system(services: Services) -> JobSystem:
    """The app's job system, built on first use (tests that skip the lifespan get one too)."""
    system = services.extras.get("jobs")
    if system is None:
        settings = services.settings
        options = ExecutorOptions(concurrency=settings.jobs_concurrency)
        secrets = SecretBox.load(settings.data_dir, settings.secret_key)
        system = JobSystem(
            services.database,
            services.gateway,
            services.keys.principal_of,
            options,
            signer=ItemSigner(secrets.derive(ITEM_TOKENS)),
            ray=ray_options(settings),
        )
        knowledge = services.extras.get("knowledge")
        if isinstance(knowledge, KnowledgeBases):  # ingestion jobs run here, any executor
            system.executor.kinds[INGEST] = IngestKind(knowledge, system.store, system.files)
        services.extras["jobs"] = system
        services.tracing.metrics.registry.register(JobMetrics(system))
    assert isinstance(system, JobSystem)
    return system


@asynccontextmanager
async def _jobs_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the executor with the app (resuming what a stopped process left), stop it first."""
    services: Services = app.state.services
    system = job_system(services)
    await system.start(run=services.settings.run_jobs)
    try:
        yield
    finally:
        await system.stop()


router = APIRouter(prefix="/v1", tags=["openai"], lifespan=_jobs_lifespan)


def check_body(op: CallOp, body: dict[str, Any]) -> str | None:
    """The same wire check a live request gets, as a message (None when the body is fine)."""
    try:
        _WIRE[op].model_validate(body)
    except ValidationError as error:
        return validation_error(RequestValidationError(error.errors())).message
    return None


def file_object(info: FileInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "object": "file",
        "bytes": info.size_bytes,
        "created_at": int(info.created_at.timestamp()),
        "filename": info.filename,
        "purpose": info.purpose,
        "status": "processed",
        "status_details": None,
    }


@router.post(
    "/files",
    summary="Upload a file (purpose=batch: a JSONL of requests; fine-tune: of conversations)",
)
async def upload_file(
    services: ServicesDep,
    principal: PrincipalDep,
    file: Annotated[UploadFile, File(description="The JSONL file")],
    purpose: Annotated[str, Form(description="What the file is for: batch or fine-tune")],
) -> Response:
    if purpose not in PURPOSES:
        raise InvalidRequest(
            f"purpose '{purpose}' is not supported here; upload batch input with purpose=batch "
            "and training data with purpose=fine-tune",
            param="purpose",
        )
    limit = services.settings.max_body_bytes
    content = await file.read(limit + 1)
    if len(content) > limit:
        raise PayloadTooLarge(limit)
    if purpose == "fine-tune":  # every line a conversation, checked before it is stored
        lines: list[Any] = await asyncio.to_thread(parse_examples, content, param="file")
    else:
        lines = await asyncio.to_thread(
            parse_lines, content, max_line_bytes=MAX_LINE_BYTES, check_body=check_body
        )
    system = job_system(services)
    info = await asyncio.to_thread(
        system.files.create,
        principal.project_id,
        principal.key_id,
        purpose,
        file.filename or "batch.jsonl",
        content,
        len(lines),
    )
    return json_response(file_object(info))


@router.get("/files", summary="List files")
async def list_files(
    services: ServicesDep,
    principal: PrincipalDep,
    purpose: str | None = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    order: Literal["asc", "desc"] = "desc",
) -> Response:
    files, more = await asyncio.to_thread(
        job_system(services).files.page,
        principal.project_id,
        purpose=purpose,
        after=after,
        limit=limit,
        newest_first=order == "desc",
    )
    data = [file_object(info) for info in files]
    return json_response(
        {
            "object": "list",
            "data": data,
            "has_more": more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


async def _file(services: Services, project_id: str, file_id: str) -> FileInfo:
    info = await asyncio.to_thread(job_system(services).files.get, file_id, project_id)
    if info is None:
        raise NotFound(
            f"no file '{file_id}' in this project; list them with GET /v1/files",
            param="file_id",
            code="file_not_found",
        )
    return info


@router.get("/files/{file_id}", summary="A file's details")
async def get_file(services: ServicesDep, principal: PrincipalDep, file_id: str) -> Response:
    return json_response(file_object(await _file(services, principal.project_id, file_id)))


@router.get("/files/{file_id}/content", summary="A file's content")
async def file_content(services: ServicesDep, principal: PrincipalDep, file_id: str) -> Response:
    await _file(services, principal.project_id, file_id)
    content = await asyncio.to_thread(
        job_system(services).files.content, file_id, principal.project_id
    )
    if content is None:  # deleted meanwhile
        raise NotFound(f"no file '{file_id}' in this project", param="file_id")
    return Response(content, media_type="application/jsonl")


@router.delete("/files/{file_id}", summary="Delete a file")
async def delete_file(services: ServicesDep, principal: PrincipalDep, file_id: str) -> Response:
    await _file(services, principal.project_id, file_id)
    await asyncio.to_thread(job_system(services).files.delete, file_id, principal.project_id)
    return json_response({"id": file_id, "object": "file", "deleted": True})
