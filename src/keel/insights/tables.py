"""Tables owned by insights/: the embedding of each sampled request, per-project settings
(the anomaly threshold, the drift webhook) and the stored result of each topics job."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from keel.store.base import Base


class InsightVectorRow(Base):
    """One sampled request: the text embedded (the guard's redacted form when it redacted),
    its vector (float32 bytes) and what topics are measured by (cost, latency, errors)."""

    __tablename__ = "insight_vectors"

    trace_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64))
    start_us: Mapped[int] = mapped_column(BigInteger)
    route: Mapped[str | None] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    answer: Mapped[str | None] = mapped_column(Text)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    cost: Mapped[float | None] = mapped_column(Float)
    duration_ms: Mapped[float] = mapped_column(Float)
    error: Mapped[bool] = mapped_column(Boolean)

    __table_args__ = (Index("ix_insight_vectors_project_id_start_us", "project_id", "start_us"),)


class InsightSettingsRow(Base):
    __tablename__ = "insight_settings"

    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    anomaly_threshold: Mapped[float] = mapped_column(Float)
    drift_webhook: Mapped[str | None] = mapped_column(String(500))
    updated_us: Mapped[int] = mapped_column(BigInteger)


class InsightTopicRunRow(Base):
    """What one `insights.topics` job found: the window it clustered, its topics and map
    (`result`, as /api/insights/topics serves it) and the topics' centroids (float32 bytes),
    which new traffic is assigned to."""

    __tablename__ = "insight_topic_runs"

    job_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64))
    route: Mapped[str | None] = mapped_column(String(200))
    since_us: Mapped[int] = mapped_column(BigInteger)
    until_us: Mapped[int] = mapped_column(BigInteger)
    created_us: Mapped[int] = mapped_column(BigInteger)
    requests: Mapped[int] = mapped_column(Integer)
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
    centroids: Mapped[bytes] = mapped_column(LargeBinary)
    dimension: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_insight_topic_runs_project_id_created_us", "project_id", "created_us"),
    )
