"""The audit log: an append-only record of every control-plane change.

A change and its audit row are written in the same transaction, so neither exists
without the other. Rows are never updated or deleted through the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from keel.auth.keys import Principal
from keel.auth.tables import AuditEvent
from keel.store.db import Database


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    project_id: str
    actor: str
    action: str
    target_type: str
    target_id: str
    before: Any
    after: Any
    ip: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "project_id": self.project_id,
            "actor": self.actor,
            "action": self.action,
            "target_type": self.target_type,
            "target_id": self.target_id,
            "before": self.before,
            "after": self.after,
            "ip": self.ip,
        }


def record(
    session: Session,
    actor: Principal | str,
    action: str,
    target_type: str,
    target_id: str,
    *,
    before: Any = None,
    after: Any = None,
    project_id: str | None = None,
) -> None:
    """Add an audit row to the caller's transaction (it commits with the change)."""
    ip = None
    if isinstance(actor, Principal):
        actor_name, project = f"key:{actor.key_id}", project_id or actor.project_id
        if actor.user_id:
            actor_name = f"user:{actor.user_id} ({actor_name})"
        ip = actor.ip
    else:
        actor_name, project = actor, project_id or "default"
    session.add(
        AuditEvent(
            at=datetime.now(UTC),
            project_id=project,
            actor=actor_name,
            action=action,
            target_type=target_type,
            target_id=target_id,
            before=before,
            after=after,
            ip=ip,
        )
    )


class AuditLog:
    def __init__(self, database: Database):
        self._db = database

    def add(
        self, actor: Principal | str, action: str, target_type: str, target_id: str, *,
        after: Any = None,
    ) -> None:  # fmt: skip
        """Record an action that changed no row of ours (a purge, a prune) in its own
        transaction; blocking: call it from a worker thread."""
        with self._db.session() as session:
            record(session, actor, action, target_type, target_id, after=after)

    def list(
        self,
        project_id: str,
        *,
        target_type: str | None = None,
        target_id: str | None = None,
        action: str | None = None,
        before_id: int | None = None,
        after_id: int | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Newest first; pass the last id seen as `before_id` for the next page.

        `after_id` asks for what came after a record seen earlier (`keel audit tail`).
        """
        query = select(AuditEvent).where(AuditEvent.project_id == project_id)
        if after_id is not None:
            query = query.where(AuditEvent.id > after_id)
        if target_type:
            query = query.where(AuditEvent.target_type == target_type)
        if target_id:
            query = query.where(AuditEvent.target_id == target_id)
        if action:
            query = query.where(AuditEvent.action == action)
        if before_id is not None:
            query = query.where(AuditEvent.id < before_id)
        query = query.order_by(AuditEvent.id.desc()).limit(limit)
        with self._db.session() as session:
            return [
                AuditEntry(
                    row.id,
                    row.at,
                    row.project_id,
                    row.actor,
                    row.action,
                    row.target_type,
                    row.target_id,
                    row.before,
                    row.after,
                    row.ip,
                )
                for row in session.scalars(query)
            ]
