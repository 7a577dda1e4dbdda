"""Tables owned by tracing/: one row per trace (the request), its spans, and scores.

Times are integer microseconds since the epoch, so time buckets are plain integer
arithmetic in SQL on SQLite and PostgreSQL alike. Trace ids start with their time, so
inserts land at the end of the indexes instead of all over them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from keel.store.base import Base


class TraceRow(Base):
    __tablename__ = "traces"

    trace_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str | None] = mapped_column(String(32))
    start_us: Mapped[int] = mapped_column(BigInteger)
    duration_ms: Mapped[float] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    operation: Mapped[str] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(String(200))
    route: Mapped[str | None] = mapped_column(String(200))
    target: Mapped[str | None] = mapped_column(String(200))
    provider: Mapped[str | None] = mapped_column(String(100))
    user: Mapped[str | None] = mapped_column(String(256))
    session_id: Mapped[str | None] = mapped_column(String(256))
    prompt_name: Mapped[str | None] = mapped_column(String(100))
    prompt_version: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    error_type: Mapped[str | None] = mapped_column(String(64))
    http_status: Mapped[int] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer)
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    cost: Mapped[float | None] = mapped_column(Float)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    input: Mapped[str | None] = mapped_column(Text)
    output: Mapped[str | None] = mapped_column(Text)
    input_sha256: Mapped[str | None] = mapped_column(String(64))
    output_sha256: Mapped[str | None] = mapped_column(String(64))
    input_bytes: Mapped[int | None] = mapped_column(Integer)
    output_bytes: Mapped[int | None] = mapped_column(Integer)
    # The guard policy that ran and the strongest action it took (allow|flag|redact|block).
    guard_policy: Mapped[str | None] = mapped_column(String(100))
    guard_action: Mapped[str | None] = mapped_column(String(16))
    # hit-exact | hit-semantic | miss (NULL: no cache consulted), and what a hit saved.
    cache: Mapped[str | None] = mapped_column(String(16))
    saved_cost: Mapped[float | None] = mapped_column(Float)
    saved_ms: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        # Newest first within a project: the list page, time ranges and /api/stats.
        Index("ix_traces_project_id_start_us", "project_id", "start_us"),
        # Selective filters a person looks up one value of.
        Index("ix_traces_project_id_session_id", "project_id", "session_id", "start_us"),
        Index("ix_traces_project_id_user", "project_id", "user", "start_us"),
        Index("ix_traces_project_id_guard_action", "project_id", "guard_action", "start_us"),
    )


class SpansRow(Base):
    """The spans of one trace, as one JSON array: they are always written and read whole."""

    __tablename__ = "trace_spans"

    trace_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    spans: Mapped[str] = mapped_column(Text)  # orjson-encoded in the recorder


class AttemptFailureRow(Base):
    """One failed upstream attempt of a trace, by the target that failed: a request a retry
    or a fallback saved still counts against the target that let it down in stats."""

    __tablename__ = "trace_attempt_failures"
    __table_args__ = (
        Index("ix_trace_attempt_failures_project_id_start_us", "project_id", "start_us"),
    )

    trace_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64))
    start_us: Mapped[int] = mapped_column(BigInteger)
    target: Mapped[str] = mapped_column(String(200))
    error_type: Mapped[str] = mapped_column(String(64))


class ScoreRow(Base):
    __tablename__ = "trace_scores"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(String(64))
    trace_id: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))  # numeric | categorical | boolean
    number: Mapped[float | None] = mapped_column(Float)
    label: Mapped[str | None] = mapped_column(String(200))
    flag: Mapped[bool | None] = mapped_column(Boolean)
    comment: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))  # human | evaluator | api
    author: Mapped[str] = mapped_column(String(100))
    created_us: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_trace_scores_project_id_trace_id", "project_id", "trace_id"),)
