"""Reads and writes of the workflow tables. Synchronous: call from worker threads.

Checkpoints are single-row inserts in their own transaction (Core, not the ORM: the
per-step cost is what the engine's overhead budget is spent on).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Table, delete, func, insert, select, update

from keel.store.db import Database
from keel.workflows.tables import (
    WorkflowRow,
    WorkflowRunRow,
    WorkflowStepRow,
    WorkflowVersionRow,
)

STEP_COLUMNS = ("run_id", "key", "kind", "status", "input", "output", "error", "attempts",
                "tokens", "cost", "started_us", "ended_us")  # fmt: skip
_RUNS: Table = WorkflowRunRow.__table__  # type: ignore[assignment]
_STEPS: Table = WorkflowStepRow.__table__  # type: ignore[assignment]
TERMINAL = ("succeeded", "failed", "cancelled")


def now_us() -> int:
    return time.time_ns() // 1000


def run_id() -> str:
    """Ids start with their time, so runs sort by age and prune from one end."""
    return f"wfr_{time.time_ns() // 1_000_000:012x}{os.urandom(6).hex()}"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    key: str
    kind: str
    status: str  # done | failed | skipped
    output: Any
    error: str | None
    started_us: int
    ended_us: int
    input: Any = None
    attempts: int = 1
    tokens: int | None = None
    cost: float | None = None

    def params(self, run: str) -> tuple[Any, ...]:
        """The row's values in STEP_COLUMNS order, JSON columns as JSON text."""
        return (run, self.key, self.kind, self.status, _json(self.input), _json(self.output),
                self.error, self.attempts, self.tokens, self.cost, self.started_us,
                self.ended_us)  # fmt: skip

    def row(self, run: str) -> dict[str, Any]:
        return {
            "run_id": run,
            "key": self.key,
            "kind": self.kind,
            "status": self.status,
            "input": self.input,
            "output": self.output,
            "error": self.error,
            "attempts": self.attempts,
            "tokens": self.tokens,
            "cost": self.cost,
            "started_us": self.started_us,
            "ended_us": self.ended_us,
        }


class WorkflowStore:
    def __init__(self, database: Database):
        self.database = database
        # The checkpoint insert as the driver takes it: a step's cost is mostly this write,
        # and the SQL expression layer would be several times the insert itself.
        mark = "%s" if database.backend == "postgresql" else "?"
        columns = ", ".join(f'"{c}"' for c in STEP_COLUMNS)
        marks = ", ".join([mark] * len(STEP_COLUMNS))
        self._insert_step = f"INSERT INTO workflow_steps ({columns}) VALUES ({marks})"
        # On SQLite, checkpoints go through one connection of their own, kept open: taking
        # a pooled connection and a transaction per step cost twice the insert itself.
        self._sqlite: Any = None
        self._sqlite_lock = threading.Lock()
        if database.backend == "sqlite":
            self._sqlite = database.engine.raw_connection()

    # -- definitions

    def definitions(self, project_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        query = select(WorkflowRow).where(WorkflowRow.project_id == project_id)
        if kind is not None:
            query = query.where(WorkflowRow.kind == kind)
        with self.database.session() as session:
            rows = session.scalars(query.order_by(WorkflowRow.name)).all()
            return [_definition(row) for row in rows]

    def all_latest(self) -> list[tuple[str, str, str, int, dict[str, Any]]]:
        """(project, kind, name, version, spec) of every definition's newest version."""
        query = (
            select(WorkflowRow, WorkflowVersionRow)
            .join(
                WorkflowVersionRow,
                (WorkflowVersionRow.workflow_id == WorkflowRow.id)
                & (WorkflowVersionRow.version == WorkflowRow.latest_version),
            )
            .where(WorkflowRow.archived.is_(False))
        )
        with self.database.session() as session:
            return [
                (w.project_id, w.kind, w.name, v.version, v.spec)
                for w, v in session.execute(query).all()
            ]

    def versions(self, project_id: str, kind: str, name: str) -> list[dict[str, Any]]:
        with self.database.session() as session:
            row = self._find(session, project_id, kind, name)
            if row is None:
                return []
            found = session.scalars(
                select(WorkflowVersionRow)
                .where(WorkflowVersionRow.workflow_id == row.id)
                .order_by(WorkflowVersionRow.version.desc())
            ).all()
            return [
                {
                    "version": v.version,
                    "spec": v.spec,
                    "content_hash": v.content_hash,
                    "message": v.message,
                    "created_at": v.created_us // 1_000_000,
                }
                for v in found
            ]

    def put_version(
        self,
        project_id: str,
        kind: str,
        name: str,
        spec: dict[str, Any],
        content_hash: str,
        message: str,
    ) -> tuple[int, bool]:
        """The version holding `spec` (new unless the newest already holds it), and
        whether it was created."""
        stamp = now_us()
        with self.database.session() as session:
            row = self._find(session, project_id, kind, name)
            if row is None:
                row = WorkflowRow(
                    project_id=project_id,
                    kind=kind,
                    name=name,
                    latest_version=0,
                    archived=False,
                    created_us=stamp,
                    updated_us=stamp,
                )
                session.add(row)
                session.flush()
            else:
                newest = session.get(WorkflowVersionRow, (row.id, row.latest_version))
                if newest is not None and newest.content_hash == content_hash and not row.archived:
                    return row.latest_version, False
            row.latest_version += 1
            row.archived = False
            row.updated_us = stamp
            session.add(
                WorkflowVersionRow(
                    workflow_id=row.id,
                    version=row.latest_version,
                    spec=spec,
                    content_hash=content_hash,
                    message=message,
                    created_us=stamp,
                )
            )
            return row.latest_version, True

    def archive(self, project_id: str, kind: str, name: str) -> bool:
        with self.database.session() as session:
            row = self._find(session, project_id, kind, name)
            if row is None or row.archived:
                return False
            row.archived = True
            row.updated_us = now_us()
            return True

    @staticmethod
    def _find(session: Any, project_id: str, kind: str, name: str) -> WorkflowRow | None:
        return session.scalars(  # type: ignore[no-any-return]
            select(WorkflowRow).where(
                WorkflowRow.project_id == project_id,
                WorkflowRow.kind == kind,
                WorkflowRow.name == name,
            )
        ).first()

    # -- runs

    def create_run(self, row: dict[str, Any]) -> None:
        with self.database.engine.begin() as connection:
            connection.execute(insert(_RUNS), row)

    def update_run(self, run: str, **values: Any) -> None:
        values["updated_us"] = now_us()
        with self.database.engine.begin() as connection:
            connection.execute(update(_RUNS).where(_RUNS.c.id == run), values)

    def claim(self, run: str, lease_until: float, now: float) -> bool:
        """Take a run whose lease expired (a replica died mid-run); False if another has it."""
        with self.database.engine.begin() as connection:
            result = connection.execute(
                update(_RUNS)
                .where(
                    _RUNS.c.id == run,
                    _RUNS.c.lease_until < now,
                    _RUNS.c.status.in_(("queued", "running")),
                )
                .values(lease_until=lease_until, status="running", updated_us=now_us())
            )
            return bool(result.rowcount)

    def renew(self, runs: list[str], lease_until: float) -> None:
        if runs:
            with self.database.engine.begin() as connection:
                connection.execute(
                    update(_RUNS).where(_RUNS.c.id.in_(runs)).values(lease_until=lease_until)
                )

    def leased_past(self, until: float, limit: int = 100) -> list[str]:
        """Unfinished runs whose lease lasts at least until `until` (those a job drives)."""
        query = (
            select(_RUNS.c.id)
            .where(_RUNS.c.status.in_(("queued", "running")), _RUNS.c.lease_until >= until)
            .order_by(_RUNS.c.created_us)
            .limit(limit)
        )
        with self.database.engine.connect() as connection:
            return [r[0] for r in connection.execute(query)]

    def orphans(self, now: float, limit: int = 100) -> list[str]:
        query = (
            select(_RUNS.c.id)
            .where(_RUNS.c.status.in_(("queued", "running")), _RUNS.c.lease_until < now)
            .order_by(_RUNS.c.created_us)
            .limit(limit)
        )
        with self.database.engine.connect() as connection:
            return [r[0] for r in connection.execute(query)]

    def run(self, run: str) -> dict[str, Any] | None:
        with self.database.engine.connect() as connection:
            row = connection.execute(select(_RUNS).where(_RUNS.c.id == run)).mappings().first()
            return dict(row) if row is not None else None

    def runs(
        self, project_id: str, workflow: str | None, limit: int, before: str | None = None
    ) -> list[dict[str, Any]]:
        query = select(_RUNS).where(_RUNS.c.project_id == project_id)
        if workflow is not None:
            query = query.where(_RUNS.c.workflow == workflow)
        if before is not None:
            query = query.where(_RUNS.c.id < before)
        query = query.order_by(_RUNS.c.id.desc()).limit(limit)
        with self.database.engine.connect() as connection:
            return [dict(r) for r in connection.execute(query).mappings()]

    def cancel_requested(self, run: str) -> bool:
        with self.database.engine.connect() as connection:
            value = connection.execute(
                select(_RUNS.c.cancel_requested).where(_RUNS.c.id == run)
            ).scalar()
            return bool(value)

    # -- checkpoints

    def save(self, run: str, checkpoint: Checkpoint) -> None:
        """One step's end, in one short transaction. A run never has two rows for a step:
        a failed step's row is removed (forget_failed) before the run is resumed."""
        if self._sqlite is not None:
            with self._sqlite_lock:  # one connection, shared by the worker threads
                cursor = self._sqlite.cursor()
                try:
                    cursor.execute(self._insert_step, checkpoint.params(run))
                    self._sqlite.commit()
                except BaseException:
                    self._sqlite.rollback()
                    raise
                finally:
                    cursor.close()
            return
        with self.database.engine.begin() as connection:
            connection.exec_driver_sql(self._insert_step, checkpoint.params(run))

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None

    def checkpoints(self, run: str) -> dict[str, Checkpoint]:
        query = select(_STEPS).where(_STEPS.c.run_id == run).order_by(_STEPS.c.started_us)
        with self.database.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return {
            r["key"]: Checkpoint(
                r["key"],
                r["kind"],
                r["status"],
                r["output"],
                r["error"],
                r["started_us"],
                r["ended_us"],
                r["input"],
                r["attempts"],
                r["tokens"],
                r["cost"],
            )
            for r in rows
        }

    def forget_failed(self, run: str) -> None:
        with self.database.engine.begin() as connection:
            connection.execute(
                delete(_STEPS).where(_STEPS.c.run_id == run, _STEPS.c.status == "failed")
            )

    # -- retention

    def count_runs(self) -> int:
        with self.database.engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(_RUNS)).scalar() or 0)

    def count_steps(self) -> int:
        with self.database.engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(_STEPS)).scalar() or 0)

    def prune(self, *, before_us: int | None, keep: int | None, chunk: int = 500) -> int:
        """Delete finished runs older than `before_us`, then beyond the newest `keep`, in
        short transactions; returns how many runs went."""
        removed = 0
        while True:
            with self.database.engine.begin() as connection:
                ids: list[str] = []
                if before_us is not None:
                    ids = [
                        r[0]
                        for r in connection.execute(
                            select(_RUNS.c.id)
                            .where(_RUNS.c.created_us < before_us, _RUNS.c.status.in_(TERMINAL))
                            .order_by(_RUNS.c.id)
                            .limit(chunk)
                        )
                    ]
                if not ids and keep is not None:
                    cutoff = connection.execute(
                        select(_RUNS.c.id).order_by(_RUNS.c.id.desc()).offset(keep).limit(1)
                    ).scalar()
                    if cutoff is not None:
                        ids = [
                            r[0]
                            for r in connection.execute(
                                select(_RUNS.c.id)
                                .where(_RUNS.c.id <= cutoff, _RUNS.c.status.in_(TERMINAL))
                                .order_by(_RUNS.c.id)
                                .limit(chunk)
                            )
                        ]
                if not ids:
                    return removed
                connection.execute(delete(_STEPS).where(_STEPS.c.run_id.in_(ids)))
                connection.execute(delete(_RUNS).where(_RUNS.c.id.in_(ids)))
                removed += len(ids)


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _definition(row: WorkflowRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "kind": row.kind,
        "latest_version": row.latest_version,
        "archived": row.archived,
        "created_at": row.created_us // 1_000_000,
        "updated_at": row.updated_us // 1_000_000,
    }
