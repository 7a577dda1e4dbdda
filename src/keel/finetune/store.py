"""FineTuneStore: a fine-tuning job's phase, scan report, checkpoints and resulting version."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select

from keel.finetune.tables import FineTuneCheckpointRow, FineTuneRunRow
from keel.jobs.store import aware, utcnow
from keel.store.db import Database


@dataclass(frozen=True, slots=True)
class Run:
    job_id: str
    phase: str
    base_model: str
    scan: dict[str, Any]
    trained_tokens: int
    model_ref: str | None
    lineage: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    id: int
    job_id: str
    step: int
    epoch: float
    train_loss: float
    valid_loss: float | None
    path: str
    created_at: datetime

    def as_wire(self, model: str | None) -> dict[str, Any]:
        """An OpenAI fine_tuning.job.checkpoint object."""
        return {
            "id": f"ftckpt_{self.id}",
            "object": "fine_tuning.job.checkpoint",
            "created_at": int(self.created_at.timestamp()),
            "fine_tuned_model_checkpoint": f"{model or self.job_id}:step-{self.step}",
            "fine_tuning_job_id": self.job_id,
            "step_number": self.step,
            "metrics": {
                "step": float(self.step),
                "train_loss": self.train_loss,
                "valid_loss": self.valid_loss,
                "full_valid_loss": self.valid_loss,
            },
        }


def _run(row: FineTuneRunRow) -> Run:
    return Run(
        row.job_id,
        row.phase,
        row.base_model,
        dict(row.scan),
        row.trained_tokens,
        row.model_ref,
        dict(row.lineage),
    )


class FineTuneStore:
    def __init__(self, database: Database):
        self.database = database

    def start(self, job_id: str, project_id: str, base_model: str) -> Run:
        """The job's run row, made on first pick-up (kept as it is when resuming)."""
        with self.database.session() as session:
            row = session.get(FineTuneRunRow, job_id)
            if row is None:
                row = FineTuneRunRow(
                    job_id=job_id,
                    project_id=project_id,
                    base_model=base_model,
                    phase="validating_files",
                    scan={},
                    trained_tokens=0,
                    lineage={},
                    updated_at=utcnow(),
                )
                session.add(row)
                session.flush()
            return _run(row)

    def update(self, job_id: str, **values: Any) -> None:
        with self.database.session() as session:
            row = session.get(FineTuneRunRow, job_id)
            if row is None:
                return
            for name, value in values.items():
                setattr(row, name, value)
            row.updated_at = utcnow()

    def runs(self, job_ids: list[str]) -> dict[str, Run]:
        if not job_ids:
            return {}
        with self.database.session() as session:
            rows = session.scalars(select(FineTuneRunRow).where(FineTuneRunRow.job_id.in_(job_ids)))
            return {row.job_id: _run(row) for row in rows}

    def by_model(self, project_id: str, model_ref: str) -> Run | None:
        with self.database.session() as session:
            row = session.scalar(
                select(FineTuneRunRow).where(
                    FineTuneRunRow.project_id == project_id, FineTuneRunRow.model_ref == model_ref
                )
            )
            return _run(row) if row else None

    def add_checkpoint(
        self,
        job_id: str,
        step: int,
        epoch: float,
        train_loss: float,
        valid_loss: float | None,
        path: str,
    ) -> None:
        with self.database.session() as session:
            # A resumed job may write a step again: the newer one wins.
            session.execute(
                delete(FineTuneCheckpointRow).where(
                    FineTuneCheckpointRow.job_id == job_id, FineTuneCheckpointRow.step == step
                )
            )
            session.add(
                FineTuneCheckpointRow(
                    job_id=job_id,
                    step=step,
                    epoch=epoch,
                    train_loss=train_loss,
                    valid_loss=valid_loss,
                    path=path,
                    created_at=utcnow(),
                )
            )

    def checkpoints(
        self, job_id: str, *, after: int | None = None, limit: int = 100, newest_first: bool = True
    ) -> list[Checkpoint]:
        with self.database.session() as session:
            query = select(FineTuneCheckpointRow).where(FineTuneCheckpointRow.job_id == job_id)
            if after is not None:
                query = query.where(
                    FineTuneCheckpointRow.id < after
                    if newest_first
                    else FineTuneCheckpointRow.id > after
                )
            order = FineTuneCheckpointRow.id.desc() if newest_first else FineTuneCheckpointRow.id
            rows = session.scalars(query.order_by(order).limit(limit)).all()
            return [
                Checkpoint(
                    r.id,
                    r.job_id,
                    r.step,
                    r.epoch,
                    r.train_loss,
                    r.valid_loss,
                    r.path,
                    aware(r.created_at) or utcnow(),
                )
                for r in rows
            ]
