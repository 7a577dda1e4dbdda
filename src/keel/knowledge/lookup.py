"""Reading a base's row by name (a 404 listing the known ones when it is missing), its
counts, and removing a document's chunks: what the service, ingestion and search share."""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from keel.errors import NotFound
from keel.knowledge.records import KnowledgeBase, KnowledgeConfig
from keel.knowledge.tables import (
    KnowledgeBaseRow,
    KnowledgeChunkRow,
    KnowledgeDocumentRow,
    KnowledgeEmbeddingRow,
)
from keel.store.db import Database


def base_row(session: Session, project_id: str, name: str) -> KnowledgeBaseRow:
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


def base_info(session: Session, row: KnowledgeBaseRow) -> KnowledgeBase:
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


def current(database: Database, project_id: str, name: str) -> KnowledgeBase:
    """The base's row alone (no counts): what a search needs to know, cheaply."""
    with database.session() as session:
        row = base_row(session, project_id, name)
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


def drop_chunks(session: Session, document_id: str) -> None:
    chunk_ids = select(KnowledgeChunkRow.id).where(KnowledgeChunkRow.document_id == document_id)
    session.execute(
        delete(KnowledgeEmbeddingRow).where(KnowledgeEmbeddingRow.chunk_id.in_(chunk_ids))
    )
    session.execute(delete(KnowledgeChunkRow).where(KnowledgeChunkRow.document_id == document_id))
