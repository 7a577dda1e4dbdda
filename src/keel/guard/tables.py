"""Tables owned by guard/: a project's own policies, and which policy applies where.

An attachment binds a policy to the whole project (`scope` project, `target` ""), to a
route (target: the route name) or to an API key (target: the key id).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from keel.store.base import Base


class GuardPolicyRow(Base):
    __tablename__ = "guard_policies"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(String(100))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class GuardAttachmentRow(Base):
    __tablename__ = "guard_attachments"
    __table_args__ = (UniqueConstraint("project_id", "scope", "target"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    scope: Mapped[str] = mapped_column(String(16))  # project | route | key
    target: Mapped[str] = mapped_column(String(200))
    policy: Mapped[str] = mapped_column(String(100))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
