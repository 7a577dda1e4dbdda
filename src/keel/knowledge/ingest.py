"""Ingestion: files parsed, chunked in the embedding model's tokens, embedded and stored.

Everything is parsed and embedded before anything is written, and a document's chunks and
vectors are replaced in one transaction: a failed ingest leaves the previous version whole.
Unchanged documents (same content hash) cost no embedding.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sqlalchemy import select

from keel.auth import audit
from keel.auth.keys import Principal
from keel.embeddings.base import Embedder
from keel.errors import InvalidRequest
from keel.knowledge.chunk import Chunk, Chunker, TokenCounter
from keel.knowledge.lookup import base_info, base_row, drop_chunks
from keel.knowledge.parse import ParsedDocument, parse
from keel.knowledge.records import IngestResult, KnowledgeBase, utcnow
from keel.knowledge.tables import (
    KnowledgeChunkRow,
    KnowledgeDocumentRow,
    KnowledgeEmbeddingRow,
)
from keel.store.db import Database


@dataclass
class _Prepared:
    document: ParsedDocument
    content_hash: str
    size_bytes: int
    chunks: list[Chunk]
    vectors: Any = None


def _hash(document: ParsedDocument, data: bytes, whole_file: bool) -> str:
    if whole_file:
        return hashlib.sha256(data).hexdigest()
    body = json.dumps([document.text, document.metadata], sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


class Ingestor:
    def __init__(
        self,
        database: Database,
        embedder: Callable[[], Embedder],
        count_tokens: TokenCounter,
        embed_batch: int = 64,
    ):
        self.database = database
        self.embedder = embedder  # the served model, or ServiceUnavailable
        self._count_tokens = count_tokens
        self._embed_batch = embed_batch

    def _known_hashes(
        self, project_id: str, name: str, sources: list[str]
    ) -> tuple[KnowledgeBase, dict[str, str]]:
        with self.database.session() as session:
            row = base_row(session, project_id, name)
            info = base_info(session, row)
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
            kb = base_row(session, project_id, name)
            now = utcnow()
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
                    drop_chunks(session, row.id)
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
            kb = base_row(session, project_id, name)
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
