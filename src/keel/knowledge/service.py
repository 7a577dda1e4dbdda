"""KnowledgeBases: the service other modules call (the admin API, the CLI through it, the
request path's retrieval step): bases and documents here, ingestion (`ingest.py`) and
search (`search.py`) behind the same object.

Database work runs in worker threads. Each process keeps each base's row and index in
memory (the index also under `<data_dir>/knowledge/<kb id>/`). Every write that changes a
base publishes a change event (topic "knowledge", key: the base's name) on the change bus;
each replica then reads the base's row again and rebuilds the index if its revision moved on.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select

from keel.auth import audit
from keel.auth.keys import Principal
from keel.embeddings.base import Embedder
from keel.errors import InvalidRequest, NotFound, ServiceUnavailable
from keel.events import Change, ChangeBus
from keel.knowledge.chunk import TokenCounter
from keel.knowledge.index import KbIndex
from keel.knowledge.ingest import Ingestor
from keel.knowledge.lookup import base_info, base_row, drop_chunks
from keel.knowledge.records import (
    MAX_TOP_K,
    DocumentInfo,
    IngestResult,
    KnowledgeBase,
    KnowledgeConfig,
    Mode,
    SearchHit,
    check_name,
    document_info,
    utcnow,
)
from keel.knowledge.search import Searcher, highlight
from keel.knowledge.tables import (
    KnowledgeBaseRow,
    KnowledgeChunkRow,
    KnowledgeDocumentRow,
    KnowledgeEmbeddingRow,
)
from keel.store.db import Database

__all__ = [
    "MAX_TOP_K", "DocumentInfo", "IngestResult", "KnowledgeBase", "KnowledgeBases",
    "KnowledgeConfig", "Mode", "SearchHit", "check_name", "highlight",
]  # fmt: skip


TOPIC = "knowledge"  # change events: key is the base's name


class KnowledgeBases:
    def __init__(
        self,
        database: Database,
        data_dir: Path,
        embedder: Callable[[], Embedder | None],
        count_tokens: TokenCounter,
        *,
        embed_batch: int = 64,
        events: ChangeBus | None = None,
    ):
        self.database = database
        self.folder = data_dir / "knowledge"
        self._embedder = embedder
        self._count_tokens = count_tokens
        self._ingestor = Ingestor(database, self.embedder, count_tokens, embed_batch)
        self._searcher = Searcher(database, self.folder, self.embedder)
        self._events = events
        if events is not None:
            events.subscribe(TOPIC, self._searcher.changed)

    def _changed(self, project_id: str, name: str) -> None:
        """Tell every replica's search (this one's included) that base `name` changed."""
        change = Change(TOPIC, name, project_id)
        if self._events is None:
            self._searcher.changed(change)
        else:
            self._events.publish(change)

    @property
    def store_reads(self) -> int:
        """Base rows searches read from the store (not from memory) since the start."""
        return self._searcher.store_reads

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
        """Parse, chunk, embed and store one file (see ingest.Ingestor.ingest)."""
        results = await self._ingestor.ingest(project_id, name, source, data,
                                              media_type=media_type, metadata=metadata,
                                              actor=actor)  # fmt: skip
        if any(result.status != "unchanged" for result in results):
            await asyncio.to_thread(self._changed, project_id, name)  # Redis publishes block
        return results

    async def search(
        self,
        project_id: str,
        name: str,
        query: str,
        top_k: int = 10,
        filters: dict[str, Any] | None = None,
        mode: Mode = "hybrid",
        rerank: str | None = None,
    ) -> list[SearchHit]:
        """The `top_k` chunks of base `name` that best answer `query`, best first (see
        search.Searcher.search; `rerank` names a reranker of knowledge/rerank.py)."""
        return await self._searcher.search(project_id, name, query, top_k, filters, mode, rerank)

    def index_for(self, kb: KnowledgeBase) -> KbIndex:
        """The base's index at its current revision (see search.Searcher.index_for)."""
        return self._searcher.index_for(kb)

    # -- bases ---------------------------------------------------------------------------

    def embedder(self) -> Embedder:
        embedder = self._embedder()
        if embedder is None:
            raise ServiceUnavailable(
                "knowledge bases need an embedding model and none is served; "
                "enable the bundled one (embeddings: true in keel.yaml)"
            )
        return embedder

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
            now = utcnow()
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
            info = base_info(session, row)
            audit.record(session, actor, "kb.create", "knowledge_base", name, after=info.as_dict())
        self._changed(project_id, name)  # a base of the same name deleted and created anew
        return info

    def list_bases(self, project_id: str) -> list[KnowledgeBase]:
        with self.database.session() as session:
            rows = session.scalars(
                select(KnowledgeBaseRow)
                .where(KnowledgeBaseRow.project_id == project_id)
                .order_by(KnowledgeBaseRow.name)
            ).all()
            return [base_info(session, row) for row in rows]

    def get(self, project_id: str, name: str) -> KnowledgeBase:
        with self.database.session() as session:
            return base_info(session, base_row(session, project_id, name))

    def delete(self, project_id: str, name: str, *, actor: Principal | str) -> None:
        with self.database.session() as session:
            row = base_row(session, project_id, name)
            before = base_info(session, row).as_dict()
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
        self._searcher.forget(kb_id)
        self._changed(project_id, name)
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
            kb = base_row(session, project_id, name)
            query = select(KnowledgeDocumentRow).where(KnowledgeDocumentRow.kb_id == kb.id)
            if source is not None:
                query = query.where(KnowledgeDocumentRow.source == source)
            if after is not None:
                query = query.where(KnowledgeDocumentRow.source > after)
            rows = session.scalars(
                query.order_by(KnowledgeDocumentRow.source).limit(limit + 1)
            ).all()
            return [document_info(row) for row in rows[:limit]], len(rows) > limit

    def chunks(self, project_id: str, name: str, document_id: str) -> list[dict[str, Any]]:
        with self.database.session() as session:
            kb = base_row(session, project_id, name)
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
            kb = base_row(session, project_id, name)
            row = self._document(session, kb, document_id)
            before = document_info(row).as_dict()
            drop_chunks(session, row.id)
            session.delete(row)
            kb.revision += 1
            kb.updated_at = utcnow()
            audit.record(
                session,
                actor,
                "kb.document.delete",
                "knowledge_document",
                f"{name}/{row.source}",
                before=before,
            )
        self._changed(project_id, name)
