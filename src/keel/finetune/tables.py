"""Tables owned by finetune/: what a fine-tuning job adds to its job row, and its checkpoints.

The job itself (state, lease, events) is a row of jobs/; `fine_tune_runs` holds its phase
(validating_files → queued → running), the scan report, and at the end the model version it
made with that version's lineage. A version is registered in the registry's own transaction
and its ref written here only after: a job that ends any other way names no version.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from keel.store.base import Base


class FineTuneRunRow(Base):
    __tablename__ = "fine_tune_runs"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    phase: Mapped[str] = mapped_column(String(20))
    base_model: Mapped[str] = mapped_column(String(120))  # name@version
    scan: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    trained_tokens: Mapped[int] = mapped_column(Integer, default=0)
    model_ref: Mapped[str | None] = mapped_column(String(120), default=None)
    lineage: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class FineTuneCheckpointRow(Base):
    """A saved training state: the step it was taken at and the losses there."""

    __tablename__ = "fine_tune_checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[float] = mapped_column(Float)
    train_loss: Mapped[float] = mapped_column(Float)
    valid_loss: Mapped[float | None] = mapped_column(Float, default=None)
    path: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
