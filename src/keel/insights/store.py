"""Reads and writes of the insight tables; synchronous, run in worker threads."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select

from keel.insights.tables import InsightSettingsRow, InsightTopicRunRow, InsightVectorRow
from keel.insights.vectors import Vectors
from keel.store.db import Database
from keel.store.inserts import MultiRowInsert, driver_cursor


@dataclass(frozen=True)
class Window:
    """Sampled requests of one project in a time range, oldest first."""

    trace_ids: list[str]
    start_us: list[int]
    texts: list[str]
    answers: list[str | None]
    routes: list[str | None]
    costs: list[float | None]
    durations_ms: list[float]
    errors: list[bool]
    vectors: Vectors

    def __len__(self) -> int:
        return len(self.trace_ids)


@dataclass(frozen=True)
class TopicRun:
    """A stored topics result: the job that made it, its window and what it found."""

    job_id: str
    route: str | None
    since_us: int
    until_us: int
    created_us: int
    result: dict[str, Any]
    centroids: Vectors


@dataclass(frozen=True)
class ProjectSettings:
    anomaly_threshold: float
    drift_webhook: str | None


VECTOR_COLUMNS = tuple(str(c.name) for c in InsightVectorRow.__table__.c)


class InsightStore:
    def __init__(self, database: Database):
        self.database = database
        self._insert = MultiRowInsert("insight_vectors", VECTOR_COLUMNS, database.backend)

    def write(self, rows: Iterable[dict[str, Any]]) -> int:
        """Insert embedded requests; a trace already stored is skipped (a retried batch).

        Straight through the driver in one statement per chunk (keel.store.inserts): this
        runs in a thread of the gateway's process, and the ORM's per-row work would hold
        the GIL, which the event loop serving requests waits for, several times longer.
        """
        values = [[row[column] for column in VECTOR_COLUMNS] for row in rows]
        if not values:
            return 0
        with driver_cursor(self.database) as cursor:
            return self._insert.run(cursor, values)

    def window(
        self,
        project_id: str,
        since_us: int,
        until_us: int,
        *,
        route: str | None = None,
        limit: int = 50_000,
    ) -> Window:
        query = (
            select(InsightVectorRow)
            .where(
                InsightVectorRow.project_id == project_id,
                InsightVectorRow.start_us >= since_us,
                InsightVectorRow.start_us < until_us,
            )
            .order_by(InsightVectorRow.start_us.desc())
            .limit(limit)
        )
        if route is not None:
            query = query.where(InsightVectorRow.route == route)
        with self.database.session() as session:
            rows = list(reversed(session.scalars(query).all()))
            return _window(rows)

    def get(self, project_id: str, trace_id: str) -> Window:
        with self.database.session() as session:
            row = session.get(InsightVectorRow, trace_id)
            return _window([row] if row is not None and row.project_id == project_id else [])

    def count(self, project_id: str) -> int:
        from sqlalchemy import func

        with self.database.session() as session:
            return int(
                session.scalar(
                    select(func.count()).where(InsightVectorRow.project_id == project_id)
                )
                or 0
            )

    def settings(self, project_id: str, default_threshold: float) -> ProjectSettings:
        with self.database.session() as session:
            row = session.get(InsightSettingsRow, project_id)
            if row is None:
                return ProjectSettings(default_threshold, None)
            return ProjectSettings(row.anomaly_threshold, row.drift_webhook)

    def save_settings(self, project_id: str, settings: ProjectSettings) -> None:
        with self.database.session() as session:
            row = session.get(InsightSettingsRow, project_id)
            if row is None:
                row = InsightSettingsRow(project_id=project_id)
                session.add(row)
            row.anomaly_threshold = settings.anomaly_threshold
            row.drift_webhook = settings.drift_webhook
            row.updated_us = time.time_ns() // 1000

    def save_topics(
        self,
        job_id: str,
        project_id: str,
        result: dict[str, Any],
        centroids: Vectors,
    ) -> None:
        """Keep a topics job's result; a job run again after a crash replaces its own."""
        with self.database.session() as session:
            row = session.get(InsightTopicRunRow, job_id)
            if row is None:
                row = InsightTopicRunRow(job_id=job_id)
                session.add(row)
            row.project_id = project_id
            row.route = result.get("route")
            row.since_us = int(result["since_us"])
            row.until_us = int(result["until_us"])
            row.created_us = time.time_ns() // 1000
            row.requests = int(result["requests"])
            row.result = result
            row.centroids = np.asarray(centroids, dtype=np.float32).tobytes()
            row.dimension = int(centroids.shape[1]) if centroids.ndim == 2 else 0

    def topics(
        self, project_id: str, *, job_id: str | None = None, route: str | None = None
    ) -> TopicRun | None:
        """A job's stored topics, or the newest of the project (of `route`, when given)."""
        query = select(InsightTopicRunRow).where(InsightTopicRunRow.project_id == project_id)
        if job_id is not None:
            query = query.where(InsightTopicRunRow.job_id == job_id)
        if route is not None:
            query = query.where(InsightTopicRunRow.route == route)
        query = query.order_by(InsightTopicRunRow.created_us.desc()).limit(1)
        with self.database.session() as session:
            row = session.scalars(query).first()
            if row is None:
                return None
            centroids = np.frombuffer(row.centroids, dtype=np.float32).reshape(
                -1, max(row.dimension, 1)
            )
            return TopicRun(row.job_id, row.route, row.since_us, row.until_us, row.created_us,
                            row.result, centroids)  # fmt: skip


def _window(rows: list[InsightVectorRow]) -> Window:
    dimension = len(rows[0].vector) // 4 if rows else 0
    vectors = (
        np.frombuffer(b"".join(r.vector for r in rows), dtype=np.float32).reshape(-1, dimension)
        if rows
        else np.zeros((0, 0), dtype=np.float32)
    )
    return Window(
        trace_ids=[r.trace_id for r in rows],
        start_us=[r.start_us for r in rows],
        texts=[r.text for r in rows],
        answers=[r.answer for r in rows],
        routes=[r.route for r in rows],
        costs=[r.cost for r in rows],
        durations_ms=[r.duration_ms for r in rows],
        errors=[r.error for r in rows],
        vectors=vectors,
    )
