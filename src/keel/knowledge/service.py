"""KnowledgeBases: the service other modules call (the admin API, the CLI through it, and
later a retrieval step of the request path): bases, documents, ingestion and search.

Database work runs in worker threads; a document's chunks and vectors are replaced in one
transaction (a failed ingest leaves the previous version whole). Each process keeps each
base's index in memory and under `<data_dir>/knowledge/<kb id>/`, rebuilt from the store
whenever the base's revision moved on (an ingest here or on another replica).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from keel.auth import audit
from keel.auth.keys import Principal
from keel.embeddings.base import Embedder
from keel.errors import InvalidRequest, NotFound, ServiceUnavailable
from keel.knowledge.chunk import Chunk, Chunker, TokenCounter
from keel.knowledge.fusion import Fusion, hybrid
from keel.knowledge.index import (
    DenseIndex,
    KbIndex,
    LexicalIndex,
    check_filters,
    top_k,
    words,
)
from keel.knowledge.parse import ParsedDocument, parse
from keel.knowledge.tables import (
    KnowledgeBaseRow,
    KnowledgeChunkRow,
    KnowledgeDocumentRow,
    KnowledgeEmbeddingRow,
)
from keel.store.db import Database

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


@dataclass
class _Prepared:
    document: ParsedDocument
    content_hash: str
    size_bytes: int
    chunks: list[Chunk]
    vectors: Any = None


def _now() -> datetime:
    return datetime.now(UTC)


def _hash(document: ParsedDocument, data: bytes, whole_file: bool) -> str:
    if whole_file:
        return hashlib.sha256(data).hexdigest()
    body = json.dumps([document.text, document.metadata], sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def _document_info(row: KnowledgeDocumentRow) -> DocumentInfo:
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


class KnowledgeBases:
    def __init__(
        self,
        database: Database,
        data_dir: Path,
        embedder: Callable[[], Embedder | None],
        count_tokens: TokenCounter,
        *,
        embed_batch: int = 64,
    ):
        self.database = database
        self.folder = data_dir / "knowledge"
        self._embedder = embedder
        self._count_tokens = count_tokens
        self._embed_batch = embed_batch
        self._indexes: dict[str, KbIndex] = {}
        self._index_lock = threading.Lock()  # one rebuild at a time per process

    # -- bases ---------------------------------------------------------------------------

    def embedder(self) -> Embedder:
        embedder = self._embedder()
        if embedder is None:
            raise ServiceUnavailable(
                "knowledge bases need an embedding model and none is served; "
                "enable the bundled one (embeddings: true in keel.yaml)"
            )
        return embedder

    def _row(self, session: Session, project_id: str, name: str) -> KnowledgeBaseRow:
        row = session.scalar(
            select(KnowledgeBaseRow).where(
                KnowledgeBaseRow.project_id == project_id, KnowledgeBaseRow.name == name
            )
        )
        if row is None:
            known = session.scalars(
                select(KnowledgeBaseRow.name).where(KnowledgeBaseRow.project_id == project_id)
            ).all()
            raise NotFound(
                f"unknown knowledge base {name!r} (known: {', '.join(known) or 'none'}); "
                "create it with 'keel kb create' or POST /api/kbs",
                param="kb",
                code="kb_not_found",
            )
        return row

    def _info(self, session: Session, row: KnowledgeBaseRow) -> KnowledgeBase:
        documents = session.scalar(select(func.count()).where(KnowledgeDocumentRow.kb_id == row.id))
        chunks = session.scalar(select(func.count()).where(KnowledgeChunkRow.kb_id == row.id))
        return KnowledgeBase(
            id=row.id,
            name=row.name,
            description=row.description,
            embedding_model=row.embedding_model,
            config=KnowledgeConfig.from_dict(row.config),
            revision=row.revision,
            documents=int(documents or 0),
            chunks=int(chunks or 0),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def create(
        self,
        project_id: str,
        name: str,
        *,
        description: str = "",
        config: KnowledgeConfig | None = None,
        actor: Principal | str,
    ) -> KnowledgeBase:
        check_name(name)
        config = config or KnowledgeConfig()
        model = self.embedder().name
        with self.database.session() as session:
            exists = session.scalar(
                select(KnowledgeBaseRow.id).where(
                    KnowledgeBaseRow.project_id == project_id, KnowledgeBaseRow.name == name
                )
            )
            if exists is not None:
                raise InvalidRequest(
                    f"knowledge base {name!r} already exists; ingest into it, or delete it first",
                    param="name",
                    code="kb_exists",
                )
            now = _now()
            row = KnowledgeBaseRow(
                id=f"kb_{uuid.uuid4().hex[:24]}",
                project_id=project_id,
                name=name,
                description=description,
                embedding_model=model,
                config=config.as_dict(),
                revision=0,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            session.flush()
            info = self._info(session, row)
            audit.record(session, actor, "kb.create", "knowledge_base", name, after=info.as_dict())
        return info

    def list_bases(self, project_id: str) -> list[KnowledgeBase]:
        with self.database.session() as session:
            rows = session.scalars(
                select(KnowledgeBaseRow)
                .where(KnowledgeBaseRow.project_id == project_id)
                .order_by(KnowledgeBaseRow.name)
            ).all()
            return [self._info(session, row) for row in rows]

    def _current(self, project_id: str, name: str) -> KnowledgeBase:
        """The base's row alone (no counts): what a search needs to know, cheaply."""
        with self.database.session() as session:
            row = self._row(session, project_id, name)
            return KnowledgeBase(
                id=row.id,
                name=row.name,
                description=row.description,
                embedding_model=row.embedding_model,
                config=KnowledgeConfig.from_dict(row.config),
                revision=row.revision,
                documents=-1,
                chunks=-1,
                created_at=row.created_at,
                updated_at=row.updated_at,
            )

    def get(self, project_id: str, name: str) -> KnowledgeBase:
        with self.database.session() as session:
            return self._info(session, self._row(session, project_id, name))

    def delete(self, project_id: str, name: str, *, actor: Principal | str) -> None:
        with self.database.session() as session:
            row = self._row(session, project_id, name)
            before = self._info(session, row).as_dict()
            kb_id = row.id
            # Children first: PostgreSQL cascades, and SQLite does with foreign keys on, but a
            # base of 100k chunks is cleaner removed table by table.
            chunk_ids = select(KnowledgeChunkRow.id).where(KnowledgeChunkRow.kb_id == kb_id)
            session.execute(
                delete(KnowledgeEmbeddingRow).where(KnowledgeEmbeddingRow.chunk_id.in_(chunk_ids))
            )
            session.execute(delete(KnowledgeChunkRow).where(KnowledgeChunkRow.kb_id == kb_id))
            session.execute(delete(KnowledgeDocumentRow).where(KnowledgeDocumentRow.kb_id == kb_id))
            session.delete(row)
            audit.record(session, actor, "kb.delete", "knowledge_base", name, before=before)
        with self._index_lock:
            self._indexes.pop(kb_id, None)
        shutil.rmtree(self.folder / kb_id, ignore_errors=True)

    # -- documents -----------------------------------------------------------------------

    def documents(
        self,
        project_id: str,
        name: str,
        *,
        source: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> tuple[list[DocumentInfo], bool]:
        """A page of documents by source name (`after`: the last source of the previous page)."""
        with self.database.session() as session:
            kb = self._row(session, project_id, name)
            query = select(KnowledgeDocumentRow).where(KnowledgeDocumentRow.kb_id == kb.id)
            if source is not None:
                query = query.where(KnowledgeDocumentRow.source == source)
            if after is not None:
                query = query.where(KnowledgeDocumentRow.source > after)
            rows = session.scalars(
                query.order_by(KnowledgeDocumentRow.source).limit(limit + 1)
            ).all()
            return [_document_info(row) for row in rows[:limit]], len(rows) > limit

    def chunks(self, project_id: str, name: str, document_id: str) -> list[dict[str, Any]]:
        with self.database.session() as session:
            kb = self._row(session, project_id, name)
            document = self._document(session, kb, document_id)
            rows = session.scalars(
                select(KnowledgeChunkRow)
                .where(KnowledgeChunkRow.document_id == document.id)
                .order_by(KnowledgeChunkRow.ordinal)
            ).all()
            return [
                {
                    "id": row.id,
                    "ordinal": row.ordinal,
                    "text": row.text,
                    "start": row.start,
                    "end": row.end,
                    "heading_path": list(row.heading_path),
                    "token_count": row.token_count,
                }
                for row in rows
            ]

    def _document(
        self, session: Any, kb: KnowledgeBaseRow, document_id: str
    ) -> KnowledgeDocumentRow:
        row: KnowledgeDocumentRow | None = session.get(KnowledgeDocumentRow, document_id)
        if row is None or row.kb_id != kb.id:
            raise NotFound(
                f"no document {document_id!r} in knowledge base {kb.name!r}; "
                f"list them with GET /api/kbs/{kb.name}/documents",
                param="document_id",
                code="document_not_found",
            )
        return row

    def delete_document(
        self, project_id: str, name: str, document_id: str, *, actor: Principal | str
    ) -> None:
        with self.database.session() as session:
            kb = self._row(session, project_id, name)
            row = self._document(session, kb, document_id)
            before = _document_info(row).as_dict()
            self._drop_chunks(session, row.id)
            session.delete(row)
            kb.revision += 1
            kb.updated_at = _now()
            audit.record(
                session,
                actor,
                "kb.document.delete",
                "knowledge_document",
                f"{name}/{row.source}",
                before=before,
            )

    @staticmethod
    def _drop_chunks(session: Session, document_id: str) -> None:
        chunk_ids = select(KnowledgeChunkRow.id).where(KnowledgeChunkRow.document_id == document_id)
        session.execute(
            delete(KnowledgeEmbeddingRow).where(KnowledgeEmbeddingRow.chunk_id.in_(chunk_ids))
        )
        session.execute(
            delete(KnowledgeChunkRow).where(KnowledgeChunkRow.document_id == document_id)
        )

    # -- ingestion -----------------------------------------------------------------------

    def _known_hashes(
        self, project_id: str, name: str, sources: list[str]
    ) -> tuple[KnowledgeBase, dict[str, str]]:
        with self.database.session() as session:
            row = self._row(session, project_id, name)
            info = self._info(session, row)
            found: dict[str, str] = {}
            for first in range(0, len(sources), 500):
                batch = sources[first : first + 500]
                pairs = session.execute(
                    select(KnowledgeDocumentRow.source, KnowledgeDocumentRow.content_hash)
                    .where(KnowledgeDocumentRow.kb_id == row.id)
                    .where(KnowledgeDocumentRow.source.in_(batch))
                ).all()
                found.update((source, content_hash) for source, content_hash in pairs)
            return info, found

    async def ingest(
        self,
        project_id: str,
        name: str,
        source: str,
        data: bytes,
        *,
        media_type: str | None = None,
        metadata: dict[str, Any] | None = None,
        actor: Principal | str,
    ) -> list[IngestResult]:
        """Parse, chunk, embed and store one file (one document, or one per row of a
        .jsonl/.csv file). Unchanged documents (same content hash) cost no embedding; a
        changed one gets a new version whose chunks replace the old in one transaction.
        Everything is parsed and embedded before anything is written: a bad file stores
        nothing."""
        if not source or len(source) > 1000:
            raise InvalidRequest(
                "a document needs a source name of 1-1000 characters", param="source"
            )
        documents = await asyncio.to_thread(parse, source, data, media_type)
        whole_file = len(documents) == 1 and documents[0].source == source
        for document in documents:
            document.metadata = {**document.metadata, **(metadata or {})}
            if document.title and "title" not in document.metadata:
                document.metadata["title"] = document.title
        kb, known = await asyncio.to_thread(
            self._known_hashes, project_id, name, [d.source for d in documents]
        )
        embedder = self.embedder()
        if embedder.name != kb.embedding_model:
            raise InvalidRequest(
                f"knowledge base {name!r} holds vectors of {kb.embedding_model!r} but this Keel "
                f"embeds with {embedder.name!r}; vectors of two models are never mixed: "
                "serve the base's model, or create a new base and ingest into it",
                param="kb",
                code="embedding_model_mismatch",
            )
        config = kb.config
        chunker = Chunker(self._count_tokens, config.chunk_tokens, config.overlap_tokens)
        prepared: list[_Prepared] = []
        unchanged: list[IngestResult] = []
        for document in documents:
            content_hash = _hash(document, data, whole_file)
            if known.get(document.source) == content_hash:
                unchanged.append(IngestResult(document.source, "", "unchanged", 0, 0))
                continue
            size = len(data) if whole_file else len(document.text.encode())
            prepared.append(_Prepared(document, content_hash, size, []))
        if prepared:
            await asyncio.to_thread(self._chunk_all, chunker, prepared)
            await self._embed_all(embedder, prepared)
            written = await asyncio.to_thread(
                self._store, project_id, name, embedder.name, prepared, actor
            )
        else:
            written = []
        if unchanged:
            unchanged = await asyncio.to_thread(self._fill_unchanged, project_id, name, unchanged)
        order = {document.source: position for position, document in enumerate(documents)}
        return sorted(written + unchanged, key=lambda result: order.get(result.source, 0))

    @staticmethod
    def _chunk_all(chunker: Chunker, prepared: list[_Prepared]) -> None:
        for item in prepared:
            item.chunks = chunker.chunk(item.document)

    async def _embed_all(self, embedder: Embedder, prepared: list[_Prepared]) -> None:
        texts = [
            chunk.embedding_text(item.document.metadata.get("title"))
            for item in prepared
            for chunk in item.chunks
        ]
        parts = []
        for first in range(0, len(texts), self._embed_batch):
            result = await embedder.embed(texts[first : first + self._embed_batch])
            parts.append(result.vectors)
        vectors = (
            np.concatenate(parts).astype(np.float32)
            if parts
            else np.zeros((0, embedder.dimension), dtype=np.float32)
        )
        position = 0
        for item in prepared:
            item.vectors = vectors[position : position + len(item.chunks)]
            position += len(item.chunks)

    def _store(
        self,
        project_id: str,
        name: str,
        model: str,
        prepared: list[_Prepared],
        actor: Principal | str,
    ) -> list[IngestResult]:
        results: list[IngestResult] = []
        with self.database.session() as session:
            kb = self._row(session, project_id, name)
            now = _now()
            for item in prepared:
                document = item.document
                row = session.scalar(
                    select(KnowledgeDocumentRow).where(
                        KnowledgeDocumentRow.kb_id == kb.id,
                        KnowledgeDocumentRow.source == document.source,
                    )
                )
                if row is not None and row.content_hash == item.content_hash:
                    results.append(
                        IngestResult(
                            document.source, row.id, "unchanged", row.version, row.chunk_count
                        )
                    )
                    continue  # an ingest that raced this one stored the same content
                status: Literal["created", "updated"] = "created" if row is None else "updated"
                if row is None:
                    row = KnowledgeDocumentRow(
                        id=f"doc_{uuid.uuid4().hex[:24]}",
                        kb_id=kb.id,
                        source=document.source,
                        version=0,
                        created_at=now,
                    )
                    session.add(row)
                else:
                    self._drop_chunks(session, row.id)
                row.content_hash = item.content_hash
                row.media_type = document.media_type
                row.meta = document.metadata
                row.version += 1
                row.size_bytes = item.size_bytes
                row.chunk_count = len(item.chunks)
                row.updated_at = now
                session.flush()
                chunk_rows = [
                    KnowledgeChunkRow(
                        kb_id=kb.id,
                        document_id=row.id,
                        ordinal=ordinal,
                        text=chunk.text,
                        start=chunk.start,
                        end=chunk.end,
                        heading_path=list(chunk.heading_path),
                        token_count=chunk.token_count,
                    )
                    for ordinal, chunk in enumerate(item.chunks)
                ]
                session.add_all(chunk_rows)
                session.flush()
                session.add_all(
                    KnowledgeEmbeddingRow(
                        chunk_id=chunk_row.id,
                        model=model,
                        dimension=int(vector.shape[0]),
                        vector=np.asarray(vector, dtype="<f4").tobytes(),
                    )
                    for chunk_row, vector in zip(chunk_rows, item.vectors, strict=True)
                )
                results.append(
                    IngestResult(document.source, row.id, status, row.version, len(chunk_rows))
                )
            changed = [result for result in results if result.status != "unchanged"]
            if changed:
                kb.revision += 1
                kb.updated_at = now
                audit.record(
                    session,
                    actor,
                    "kb.ingest",
                    "knowledge_base",
                    name,
                    after={
                        "documents": [r.as_dict() for r in changed[:100]],
                        "count": len(changed),
                    },
                )
        return results

    def _fill_unchanged(
        self, project_id: str, name: str, results: list[IngestResult]
    ) -> list[IngestResult]:
        with self.database.session() as session:
            kb = self._row(session, project_id, name)
            rows = {
                row.source: row
                for row in session.scalars(
                    select(KnowledgeDocumentRow).where(
                        KnowledgeDocumentRow.kb_id == kb.id,
                        KnowledgeDocumentRow.source.in_([r.source for r in results]),
                    )
                )
            }
        return [
            IngestResult(
                r.source,
                rows[r.source].id,
                "unchanged",
                rows[r.source].version,
                rows[r.source].chunk_count,
            )
            if r.source in rows
            else r
            for r in results
        ]

    # -- indexes -------------------------------------------------------------------------

    def _build_index(self, kb: KnowledgeBase) -> KbIndex:
        with self.database.session() as session:
            documents: dict[str, dict[str, Any]] = {
                row.id: {"source": row.source, "metadata": dict(row.meta)}
                for row in session.scalars(
                    select(KnowledgeDocumentRow).where(KnowledgeDocumentRow.kb_id == kb.id)
                )
            }
            rows = session.execute(
                select(
                    KnowledgeChunkRow.id,
                    KnowledgeChunkRow.document_id,
                    KnowledgeChunkRow.text,
                    KnowledgeChunkRow.heading_path,
                    KnowledgeEmbeddingRow.vector,
                )
                .join(
                    KnowledgeEmbeddingRow,
                    (KnowledgeEmbeddingRow.chunk_id == KnowledgeChunkRow.id)
                    & (KnowledgeEmbeddingRow.model == kb.embedding_model),
                )
                .where(KnowledgeChunkRow.kb_id == kb.id)
                .order_by(KnowledgeChunkRow.id)
            ).all()
        dimension = self.embedder().dimension
        vectors = np.zeros((len(rows), dimension), dtype=np.float32)
        texts: list[str] = []
        for position, (_, doc_id, text, heading_path, vector) in enumerate(rows):
            vectors[position] = np.frombuffer(vector, dtype="<f4")
            title = documents[doc_id]["metadata"].get("title")
            texts.append(embedding_text(text, heading_path, title))
        lexical = LexicalIndex(kb.config.bm25_k1, kb.config.bm25_b)
        lexical.build(texts)
        return KbIndex(
            kb_id=kb.id,
            model=kb.embedding_model,
            revision=kb.revision,
            chunk_ids=np.asarray([row[0] for row in rows], dtype=np.int64),
            document_ids=[row[1] for row in rows],
            documents=documents,
            dense=DenseIndex(vectors),
            lexical=lexical,
        )

    def index_for(self, kb: KnowledgeBase) -> KbIndex:
        """The base's index at its current revision: in memory, else from disk, else rebuilt
        from the store (and saved for the next start)."""
        with self._index_lock:
            index = self._indexes.get(kb.id)
            if index is not None and index.revision == kb.revision:
                return index
            folder = self.folder / kb.id
            index = KbIndex.load(folder)
            if index is None or index.revision != kb.revision or index.model != kb.embedding_model:
                index = self._build_index(kb)
                with contextlib.suppress(OSError):  # a read-only data dir serves from memory
                    index.save(folder)
            self._indexes[kb.id] = index
            return index

    # -- search --------------------------------------------------------------------------

    async def search(
        self,
        project_id: str,
        name: str,
        query: str,
        top_k: int = 10,
        filters: dict[str, Any] | None = None,
        mode: Mode = "hybrid",
    ) -> list[SearchHit]:
        """The `top_k` chunks of base `name` that best answer `query`, best first."""
        if not query.strip():
            raise InvalidRequest("query is empty; send the text to search for", param="query")
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidRequest(f"top_k must be 1-{MAX_TOP_K}", param="top_k")
        if mode not in ("dense", "lexical", "hybrid"):
            raise InvalidRequest("mode is one of dense, lexical, hybrid", param="mode")
        try:
            check_filters(filters or {})
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="filters") from exc
        kb = await asyncio.to_thread(self._current, project_id, name)
        index = await asyncio.to_thread(self.index_for, kb)
        query_vector: Any = None
        if mode != "lexical":
            embedder = self.embedder()
            if embedder.name != kb.embedding_model:
                raise InvalidRequest(
                    f"knowledge base {name!r} was embedded with {kb.embedding_model!r}, not "
                    f"{embedder.name!r}; search it with mode 'lexical' or serve its model",
                    param="mode",
                    code="embedding_model_mismatch",
                )
            query_vector = (await embedder.embed([query])).vectors[0]
        return await asyncio.to_thread(
            self._rank, index, kb, query, query_vector, top_k, filters, mode
        )

    def _rank(
        self,
        index: KbIndex,
        kb: KnowledgeBase,
        query: str,
        query_vector: Any,
        k: int,
        filters: dict[str, Any] | None,
        mode: Mode,
    ) -> list[SearchHit]:
        mask = index.mask(filters)
        lexical = index.lexical.scores(query) if mode != "dense" else None
        dense = None
        if mode == "hybrid":
            assert lexical is not None
            positions, scores, dense = hybrid(
                query_vector, index.dense.vectors, lexical, kb.config.fusion, k, mask
            )
        elif mode == "dense":
            # Exact below ANN_MIN chunks or with a filter, else the usearch graph.
            positions, scores = index.dense.search(query_vector, k, mask)
        else:
            assert lexical is not None
            if mask is not None:
                lexical = np.where(mask, lexical, -np.inf).astype(np.float32)
            positions, scores = top_k(lexical, k)
            keep = scores > 0
            positions, scores = positions[keep], scores[keep]
        return self._hits(index, positions, scores, dense, lexical, query, mode)

    def _hits(
        self,
        index: KbIndex,
        positions: Any,
        scores: Any,
        dense: Any,
        lexical: Any,
        query: str,
        mode: Mode,
    ) -> list[SearchHit]:
        ids = [int(index.chunk_ids[p]) for p in positions]
        if not ids:
            return []
        with self.database.session() as session:
            rows = {
                row.id: row
                for row in session.scalars(
                    select(KnowledgeChunkRow).where(KnowledgeChunkRow.id.in_(ids))
                )
            }
        terms = set(words(query))
        hits = []
        for position, chunk_id, score in zip(positions, ids, scores, strict=True):
            row = rows.get(chunk_id)
            if row is None:  # deleted since the index was read
                continue
            document = index.documents.get(row.document_id, {})
            start, end = highlight(row.text, terms)
            hits.append(
                SearchHit(
                    chunk_id=chunk_id,
                    document_id=row.document_id,
                    source=str(document.get("source", "")),
                    text=row.text,
                    start=row.start,
                    end=row.end,
                    heading_path=list(row.heading_path),
                    metadata=dict(document.get("metadata", {})),
                    score=round(float(score), 6),
                    dense_score=round(
                        float(dense[position] if dense is not None else score)
                        if mode != "lexical"
                        else 0.0,
                        6,
                    ),
                    lexical_score=round(float(lexical[position]), 6)
                    if lexical is not None
                    else 0.0,
                    highlight_start=row.start + start,
                    highlight_end=row.start + end,
                )
            )
        return hits


_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")


def highlight(text: str, terms: set[str]) -> tuple[int, int]:
    """Offsets (in `text`) of the sentence sharing most query terms; the first when none."""
    best, best_span = -1, (0, len(text))
    for match in _SENTENCE.finditer(text):
        sentence = match.group()
        if not sentence.strip():
            continue
        overlap = len(terms.intersection(words(sentence)))
        if overlap > best:
            lead = len(sentence) - len(sentence.lstrip())
            best, best_span = overlap, (match.start() + lead, match.end())
    return best_span


def timed(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)
