"""/api/kbs: a project's knowledge bases, their documents, and search over them.

Reading and searching takes `kb:read`; creating, ingesting and deleting `kb:write`.
Documents arrive as the raw request body (`?source=` names them), so an upload is one
request without a multipart parser, bounded by the server's body limit (413 above it).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from keel.auth.keys import Principal
from keel.errors import InvalidRequest
from keel.knowledge.fusion import Fusion
from keel.knowledge.parse import SUPPORTED
from keel.knowledge.records import SearchHit
from keel.knowledge.service import KnowledgeBases, KnowledgeConfig
from keel.server.deps import ServicesDep, require
from keel.server.openai.protocol import ErrorResponse
from keel.server.responses import json_response

router = APIRouter(prefix="/kbs", tags=["knowledge"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid input (the message names the cause)"},
    404: {"model": ErrorResponse, "description": "No such knowledge base or document here"},
    413: {"model": ErrorResponse, "description": "The upload is larger than the body limit"},
    503: {"model": ErrorResponse, "description": "No embedding model is served"},
}
Kb = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", description="Knowledge base name.")
]
DocumentId = Annotated[str, Path(max_length=40, description="Document id (doc_…).")]


def knowledge_service(services: ServicesDep) -> KnowledgeBases:
    """The process's KnowledgeBases (the gateway's retrieval step uses the same one)."""
    found = services.extras["knowledge"]
    assert isinstance(found, KnowledgeBases)
    return found


KnowledgeDep = Annotated[KnowledgeBases, Depends(knowledge_service)]


class FusionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["convex", "rrf"] = "convex"
    dense_weight: float = Field(Fusion().dense_weight, ge=0, le=1)
    rrf_k: int = Field(60, ge=1, le=1000)
    depth: int = Field(Fusion().depth, ge=10, le=1000)
    feedback: int = Field(Fusion().feedback, ge=0, le=20)
    feedback_weight: float = Field(Fusion().feedback_weight, ge=0, le=4)
    document_weight: float = Field(
        Fusion().document_weight,
        ge=0,
        le=1,
        description="Share of a chunk's score taken from its document's best chunks.",
    )


class CreateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=100, description="Unique in the project.")
    description: str = Field("", max_length=1000)
    chunk_tokens: int = Field(
        KnowledgeConfig().chunk_tokens, ge=32, le=512, description="Chunk size in model tokens."
    )
    overlap_tokens: int = Field(
        KnowledgeConfig().overlap_tokens, ge=0, le=256, description="Tokens shared at each cut."
    )
    fusion: FusionBody = Field(default_factory=FusionBody)


class KnowledgeBaseInfo(BaseModel):
    id: str
    object: Literal["knowledge_base"]
    name: str
    description: str
    embedding_model: str
    config: dict[str, Any]
    revision: int
    documents: int
    chunks: int
    created_at: int
    updated_at: int


class KnowledgeBaseList(BaseModel):
    object: Literal["list"]
    data: list[KnowledgeBaseInfo]


class DocumentInfo(BaseModel):
    id: str
    object: Literal["knowledge_document"]
    source: str
    content_hash: str
    media_type: str
    metadata: dict[str, Any]
    version: int
    size_bytes: int
    chunk_count: int
    created_at: int
    updated_at: int


class DocumentList(BaseModel):
    object: Literal["list"]
    data: list[DocumentInfo]
    has_more: bool


class IngestInfo(BaseModel):
    source: str
    document_id: str
    status: Literal["created", "updated", "unchanged"]
    version: int
    chunks: int


class IngestList(BaseModel):
    object: Literal["list"]
    data: list[IngestInfo]


class ChunkInfo(BaseModel):
    id: int
    ordinal: int
    text: str
    start: int
    end: int
    heading_path: list[str]
    token_count: int


class ChunkList(BaseModel):
    object: Literal["list"]
    data: list[ChunkInfo]


class SearchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=10_000)
    top_k: int = Field(10, ge=1, le=100)
    mode: Literal["dense", "lexical", "hybrid"] = "hybrid"
    filters: dict[str, Any] | None = Field(
        None,
        description="Document metadata that must match: {'field': value}, "
        "{'field': {'$in': [...]}}, {'source': {'$prefix': 'handbook/'}}.",
    )
    rerank: Literal["lexical"] | None = Field(
        None, description="A reranker for the first ranking's best 30 candidates (opt-in)."
    )


class SearchResult(BaseModel):
    object: Literal["list"]
    mode: str
    took_ms: float
    data: list[SearchHit]  # the knowledge layer's own record, as the OpenAPI schema


@router.post(
    "",
    summary="Create a knowledge base",
    status_code=201,
    response_model=KnowledgeBaseInfo,
    responses=_ERRORS,
)
async def create_kb(
    body: CreateBody,
    kbs: KnowledgeDep,
    principal: Annotated[Principal, require("kb:write")],
) -> Response:
    fusion = Fusion(**body.fusion.model_dump())
    config = KnowledgeConfig(
        chunk_tokens=body.chunk_tokens,
        overlap_tokens=min(body.overlap_tokens, body.chunk_tokens // 2),
        fusion=fusion,
    )
    created = await asyncio.to_thread(
        kbs.create,
        principal.project_id,
        body.name,
        description=body.description,
        config=config,
        actor=principal,
    )
    return json_response(created.as_dict(), status=201)


@router.get("", summary="List knowledge bases", response_model=KnowledgeBaseList)
async def list_kbs(
    kbs: KnowledgeDep, principal: Annotated[Principal, require("kb:read")]
) -> Response:
    found = await asyncio.to_thread(kbs.list_bases, principal.project_id)
    return json_response({"object": "list", "data": [kb.as_dict() for kb in found]})


@router.get(
    "/{kb}", summary="Get a knowledge base", response_model=KnowledgeBaseInfo, responses=_ERRORS
)
async def get_kb(
    kb: Kb, kbs: KnowledgeDep, principal: Annotated[Principal, require("kb:read")]
) -> Response:
    return json_response((await asyncio.to_thread(kbs.get, principal.project_id, kb)).as_dict())


@router.delete(
    "/{kb}",
    summary="Delete a knowledge base, its documents and indexes",
    status_code=204,
    responses=_ERRORS,
)
async def delete_kb(
    kb: Kb, kbs: KnowledgeDep, principal: Annotated[Principal, require("kb:write")]
) -> Response:
    await asyncio.to_thread(kbs.delete, principal.project_id, kb, actor=principal)
    return Response(status_code=204)


@router.post(
    "/{kb}/documents",
    summary="Upload a document (the raw file as the body); unchanged content is skipped",
    response_model=IngestList,
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
async def upload_document(
    kb: Kb,
    request: Request,
    kbs: KnowledgeDep,
    principal: Annotated[Principal, require("kb:write")],
    source: Annotated[
        str | None,
        Query(
            max_length=1000,
            description="Document name, e.g. handbook/holidays.md; its extension picks the parser.",
        ),
    ] = None,
    metadata: Annotated[
        str | None, Query(max_length=10_000, description="JSON object of metadata to filter on.")
    ] = None,
) -> Response:
    if not source:
        raise InvalidRequest(
            "name the document: POST /api/kbs/{kb}/documents?source=handbook.md", param="source"
        )
    extra: dict[str, Any] = {}
    if metadata:
        try:
            extra = json.loads(metadata)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"metadata is not JSON ({exc.msg})", param="metadata") from exc
        if not isinstance(extra, dict):
            raise InvalidRequest("metadata must be a JSON object", param="metadata")
    data = await request.body()
    results = await kbs.ingest(
        principal.project_id,
        kb,
        source,
        data,
        media_type=request.headers.get("content-type"),
        metadata=extra,
        actor=principal,
    )
    return json_response({"object": "list", "data": [r.as_dict() for r in results]})


@router.get(
    "/{kb}/documents", summary="List documents", response_model=DocumentList, responses=_ERRORS
)
async def list_documents(
    kb: Kb,
    kbs: KnowledgeDep,
    principal: Annotated[Principal, require("kb:read")],
    source: Annotated[str | None, Query(max_length=1000, description="Only this source.")] = None,
    after: Annotated[str | None, Query(max_length=1000, description="Page after this source.")] = (
        None
    ),
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    found, more = await asyncio.to_thread(
        kbs.documents, principal.project_id, kb, source=source, after=after, limit=limit
    )
    return json_response({"object": "list", "data": [d.as_dict() for d in found], "has_more": more})


@router.get(
    "/{kb}/documents/{document_id}/chunks",
    summary="A document's chunks in reading order",
    response_model=ChunkList,
    responses=_ERRORS,
)
async def list_chunks(
    kb: Kb,
    document_id: DocumentId,
    kbs: KnowledgeDep,
    principal: Annotated[Principal, require("kb:read")],
) -> Response:
    found = await asyncio.to_thread(kbs.chunks, principal.project_id, kb, document_id)
    return json_response({"object": "list", "data": found})


@router.delete(
    "/{kb}/documents/{document_id}",
    summary="Delete a document and its chunks",
    status_code=204,
    responses=_ERRORS,
)
async def delete_document(
    kb: Kb,
    document_id: DocumentId,
    kbs: KnowledgeDep,
    principal: Annotated[Principal, require("kb:write")],
) -> Response:
    await asyncio.to_thread(
        kbs.delete_document, principal.project_id, kb, document_id, actor=principal
    )
    return Response(status_code=204)


@router.post(
    "/{kb}/search",
    summary="Search a knowledge base (dense, lexical or hybrid)",
    response_model=SearchResult,
    responses=_ERRORS,
)
async def search(
    kb: Kb,
    body: SearchBody,
    kbs: KnowledgeDep,
    principal: Annotated[Principal, require("kb:read")],
) -> Response:
    started = time.perf_counter()
    hits = await kbs.search(
        principal.project_id, kb, body.query, body.top_k, body.filters, body.mode, body.rerank
    )
    took = round((time.perf_counter() - started) * 1000, 3)
    return json_response(
        {"object": "list", "mode": body.mode, "took_ms": took, "data": [h.as_dict() for h in hits]}
    )
