"""The knowledge nouns other modules see: a base and its settings, a document, an ingest's
result and a search hit, with the name rule for bases. Plain values, no I/O."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from keel.errors import InvalidRequest
from keel.knowledge.chunk import Chunk
from keel.knowledge.fusion import Fusion
from keel.knowledge.tables import KnowledgeDocumentRow

Mode = Literal["dense", "lexical", "hybrid"]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
MAX_TOP_K = 100


def check_name(name: str, param: str = "name") -> None:
    if not _NAME.match(name):
        raise InvalidRequest(
            f"invalid knowledge base name {name[:120]!r}: letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, at most 100 characters",
            param=param,
        )


@dataclass(frozen=True)
class KnowledgeConfig:
    """Per-base settings, fixed at creation (changing chunking means re-ingesting)."""

    chunk_tokens: int = 200
    overlap_tokens: int = 40
    fusion: Fusion = field(default_factory=Fusion)
    bm25_k1: float = 1.2
    bm25_b: float = 0.75

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> KnowledgeConfig:
        fusion = Fusion(**raw.get("fusion", {}))
        rest = {key: value for key, value in raw.items() if key != "fusion"}
        return cls(fusion=fusion, **rest)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class KnowledgeBase:
    id: str
    name: str
    description: str
    embedding_model: str
    config: KnowledgeConfig
    revision: int
    documents: int
    chunks: int
    created_at: datetime
    updated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "knowledge_base",
            "name": self.name,
            "description": self.description,
            "embedding_model": self.embedding_model,
            "config": self.config.as_dict(),
            "revision": self.revision,
            "documents": self.documents,
            "chunks": self.chunks,
            "created_at": int(self.created_at.timestamp()),
            "updated_at": int(self.updated_at.timestamp()),
        }


@dataclass(frozen=True)
class DocumentInfo:
    id: str
    source: str
    content_hash: str
    media_type: str
    metadata: dict[str, Any]
    version: int
    size_bytes: int
    chunk_count: int
    created_at: datetime
    updated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "knowledge_document",
            "source": self.source,
            "content_hash": self.content_hash,
            "media_type": self.media_type,
            "metadata": self.metadata,
            "version": self.version,
            "size_bytes": self.size_bytes,
            "chunk_count": self.chunk_count,
            "created_at": int(self.created_at.timestamp()),
            "updated_at": int(self.updated_at.timestamp()),
        }


@dataclass(frozen=True)
class IngestResult:
    source: str
    document_id: str
    status: Literal["created", "updated", "unchanged"]
    version: int
    chunks: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SearchHit:
    """One retrieved chunk: where it is, how it scored, and the span that best matches."""

    chunk_id: int
    document_id: str
    source: str
    text: str
    start: int
    end: int
    heading_path: list[str]
    metadata: dict[str, Any]
    score: float
    dense_score: float
    lexical_score: float
    highlight_start: int  # document offsets of the best-matching sentence of the chunk
    highlight_end: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def utcnow() -> datetime:
    return datetime.now(UTC)


def document_info(row: KnowledgeDocumentRow) -> DocumentInfo:
    return DocumentInfo(
        id=row.id,
        source=row.source,
        content_hash=row.content_hash,
        media_type=row.media_type,
        metadata=dict(row.meta),
        version=row.version,
        size_bytes=row.size_bytes,
        chunk_count=row.chunk_count,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def embedding_text(text: str, heading_path: list[str] | tuple[str, ...], title: str | None) -> str:
    return Chunk(text, 0, len(text), tuple(heading_path), 0).embedding_text(title)
