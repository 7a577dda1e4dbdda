"""FileStore: files clients upload (batch input) and jobs produce (batch output), per project.

Files live in the store itself, so every replica serves every file and a job's output is
written in the same transaction that finishes the job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select

from keel.jobs.store import aware, new_id, utcnow
from keel.jobs.tables import StoredFileRow
from keel.store.db import Database


@dataclass(frozen=True, slots=True)
class FileInfo:
    id: str
    project_id: str
    purpose: str
    filename: str
    size_bytes: int
    lines: int
    created_at: datetime


def _info(row: StoredFileRow) -> FileInfo:
    return FileInfo(
        row.id,
        row.project_id,
        row.purpose,
        row.filename,
        row.size_bytes,
        row.lines,
        aware(row.created_at) or utcnow(),
    )


class FileStore:
    def __init__(self, database: Database):
        self.database = database

    def create(
        self, project_id: str, key_id: str, purpose: str, filename: str, content: bytes, lines: int
    ) -> FileInfo:
        with self.database.session() as session:
            row = StoredFileRow(
                id=new_id("file"),
                project_id=project_id,
                key_id=key_id,
                purpose=purpose,
                filename=filename,
                size_bytes=len(content),
                lines=lines,
                content=content,
                created_at=utcnow(),
            )
            session.add(row)
            session.flush()
            return _info(row)

    def get(self, file_id: str, project_id: str) -> FileInfo | None:
        with self.database.session() as session:
            row = session.get(StoredFileRow, file_id)
            if row is None or row.project_id != project_id:
                return None
            return _info(row)

    def content(self, file_id: str, project_id: str) -> bytes | None:
        with self.database.session() as session:
            row = session.scalar(
                select(StoredFileRow.content).where(
                    StoredFileRow.id == file_id, StoredFileRow.project_id == project_id
                )
            )
            return bytes(row) if row is not None else None

    def page(
        self,
        project_id: str,
        *,
        purpose: str | None = None,
        after: str | None = None,
        limit: int = 100,
        newest_first: bool = True,
    ) -> tuple[list[FileInfo], bool]:
        columns = [c for c in StoredFileRow.__table__.columns if c.name != "content"]
        with self.database.session() as session:
            query = select(*columns).where(StoredFileRow.project_id == project_id)
            if purpose is not None:
                query = query.where(StoredFileRow.purpose == purpose)
            if after is not None:
                anchor = session.get(StoredFileRow, after)
                if anchor is not None and anchor.project_id == project_id:
                    key = (StoredFileRow.created_at, StoredFileRow.id)
                    at = (anchor.created_at, anchor.id)
                    query = query.where(
                        (key[0] < at[0]) | ((key[0] == at[0]) & (key[1] < at[1]))
                        if newest_first
                        else (key[0] > at[0]) | ((key[0] == at[0]) & (key[1] > at[1]))
                    )
            order = (
                (StoredFileRow.created_at.desc(), StoredFileRow.id.desc())
                if newest_first
                else (StoredFileRow.created_at, StoredFileRow.id)
            )
            rows = session.execute(query.order_by(*order).limit(limit + 1)).all()
            found = [
                FileInfo(
                    r.id,
                    r.project_id,
                    r.purpose,
                    r.filename,
                    r.size_bytes,
                    r.lines,
                    aware(r.created_at) or utcnow(),
                )
                for r in rows[:limit]
            ]
            return found, len(rows) > limit

    def delete(self, file_id: str, project_id: str) -> bool:
        with self.database.session() as session:
            gone = session.execute(
                delete(StoredFileRow).where(
                    StoredFileRow.id == file_id, StoredFileRow.project_id == project_id
                )
            )
            return bool(gone.rowcount)  # type: ignore[attr-defined]
