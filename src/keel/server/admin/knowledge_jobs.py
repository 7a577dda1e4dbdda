"""/api/kbs/{kb}/files and /api/kbs/{kb}/ingest: ingestion as a job.

Files are staged one request each (checked as they arrive: an empty file, an unsupported
type or a PDF that is not one is a 400 and is not kept), then one request starts a
`kb.ingest` job over them; /api/jobs/{id} and the console's jobs page follow its progress.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from keel.auth.keys import Principal
from keel.errors import InvalidRequest, NotFound
from keel.jobs.ingest import KIND, PURPOSE
from keel.knowledge.parse import SUPPORTED, parse
from keel.server.admin.jobs import job_view
from keel.server.admin.knowledge import _ERRORS, Kb, KnowledgeDep
from keel.server.deps import ServicesDep, require
from keel.server.openai.files import job_system
from keel.server.responses import json_response

router = APIRouter(prefix="/kbs", tags=["knowledge"])
MAX_FILES = 10_000


class StagedFile(BaseModel):
    id: str
    object: Literal["knowledge_file"]
    source: str
    bytes: int
    documents: int = Field(description="Documents in the file (rows of a .jsonl/.csv).")


class IngestFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file_id: str = Field(max_length=64, description="A file staged with POST .../files.")
    metadata: dict[str, Any] | None = Field(None, description="Metadata for its documents.")


class IngestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    files: list[IngestFile] = Field(min_length=1, max_length=MAX_FILES)


@router.post(
    "/{kb}/files",
    summary="Stage a file for an ingestion job (checked now, ingested by POST .../ingest)",
    status_code=201,
    response_model=StagedFile,
    responses=_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": f"The file's bytes. Supported: {SUPPORTED}.",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def stage_file(
    kb: Kb,
    request: Request,
    kbs: KnowledgeDep,
    services: ServicesDep,
    principal: Annotated[Principal, require("kb:write")],
    source: Annotated[
        str | None,
        Query(max_length=1000, description="Document name; its extension picks the parser."),
    ] = None,
) -> Response:
    if not source:
        raise InvalidRequest(
            "name the file: POST /api/kbs/{kb}/files?source=handbook.md", param="source"
        )
    await asyncio.to_thread(kbs.get, principal.project_id, kb)  # a 404 before the body is read
    data = await request.body()
    documents = await asyncio.to_thread(parse, source, data, request.headers.get("content-type"))
    files = job_system(services).files
    info = await asyncio.to_thread(
        files.create, principal.project_id, principal.key_id, PURPOSE, source, data, len(documents)
    )
    body = {"id": info.id, "object": "knowledge_file", "source": source,
            "bytes": len(data), "documents": len(documents)}  # fmt: skip
    return json_response(body, status=201)


@router.post(
    "/{kb}/ingest",
    summary="Start a job that ingests staged files (follow it at GET /api/jobs/{id})",
    status_code=201,
    responses=_ERRORS,
)
async def start_ingest(
    kb: Kb,
    body: IngestBody,
    kbs: KnowledgeDep,
    services: ServicesDep,
    principal: Annotated[Principal, require("kb:write")],
) -> Response:
    project = principal.project_id
    await asyncio.to_thread(kbs.get, project, kb)
    system = job_system(services)
    items: list[tuple[str, dict[str, Any]]] = []
    for position, file in enumerate(body.files):
        info = await asyncio.to_thread(system.files.get, file.file_id, project)
        if info is None or info.purpose != PURPOSE:
            raise NotFound(
                f"files[{position}]: no staged file {file.file_id!r} in this project; stage it "
                f"with POST /api/kbs/{kb}/files",
                param=f"files[{position}].file_id",
            )
        items.append((info.filename, {"file_id": info.id, "metadata": file.metadata}))
    job = await asyncio.to_thread(
        system.store.create, KIND, project, principal.key_id, {"kb": kb}, items
    )
    system.executor.wake()
    return json_response(job_view(job), status=201)
