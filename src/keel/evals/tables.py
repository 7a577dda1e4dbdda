"""Tables owned by evals/: datasets, their immutable versions, and their items.

An item belongs to every version from the one that added it up to (not including) the one
that removed it, so a new version costs only its new rows and an old one never changes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from keel.store.base import Base


class DatasetRow(Base):
    __tablename__ = "eval_datasets"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    latest_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DatasetVersionRow(Base):
    __tablename__ = "eval_dataset_versions"

    dataset_id: Mapped[str] = mapped_column(
        ForeignKey("eval_datasets.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    items: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(200))  # traces | file:NAME | api | console
    note: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DatasetItemRow(Base):
    __tablename__ = "eval_dataset_items"
    __table_args__ = (Index("ix_eval_dataset_items_dataset_id", "dataset_id", "added_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("eval_datasets.id", ondelete="CASCADE"))
    added_version: Mapped[int] = mapped_column(Integer)
    removed_version: Mapped[int | None] = mapped_column(Integer)
    # {"messages": [...]} or {"variables": {...}}
    input: Mapped[dict[str, Any]] = mapped_column(JSON)
    expected: Mapped[Any] = mapped_column(JSON, nullable=True)
    context: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    source_trace_id: Mapped[str | None] = mapped_column(String(32))


class OnlineRuleRow(Base):
    """Online evaluation of one route: the share of its live calls scored, and by what."""

    __tablename__ = "eval_online_rules"
    __table_args__ = (UniqueConstraint("project_id", "route"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    route: Mapped[str] = mapped_column(String(200))
    sample: Mapped[float] = mapped_column(Float)
    scorers: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
