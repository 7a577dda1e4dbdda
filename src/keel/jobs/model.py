"""The job nouns every part of jobs/ shares: a job, its items, its events, a produced file.

A job moves queued → running → succeeded | failed | cancelled (through `cancelling` when a
cancel reaches a running job). Items move queued → sent → done | failed (or cancelled).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

JobState = Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled"]
ItemState = Literal["queued", "sent", "done", "failed", "cancelled"]
FINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class Progress:
    """Done out of total, items per second since the job started and the time left at that rate."""

    done: int
    failed: int
    total: int
    rate: float | None  # items finished per second
    eta_seconds: float | None

    @property
    def finished(self) -> int:
        return self.done + self.failed

    def as_dict(self) -> dict[str, Any]:
        return {
            "done": self.done,
            "failed": self.failed,
            "total": self.total,
            "rate": self.rate,
            "eta_seconds": self.eta_seconds,
        }


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    kind: str
    project_id: str
    key_id: str
    params: dict[str, Any]
    state: str
    total: int
    done: int
    failed: int
    result: dict[str, Any]
    error: str | None
    created_at: datetime
    started_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    finished_at: datetime | None = None
    lease: str | None = None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def progress(self, now: float | None = None) -> Progress:
        finished = self.done + self.failed
        rate = eta = None
        if self.started_at is not None and finished:
            end = self.finished_at.timestamp() if self.finished_at else (now or time.time())
            elapsed = max(end - self.started_at.timestamp(), 1e-6)
            rate = finished / elapsed
            eta = 0.0 if self.final else (self.total - finished) / rate
        return Progress(self.done, self.failed, self.total, rate, eta)


@dataclass(frozen=True, slots=True)
class Item:
    id: int
    job_id: str
    ordinal: int
    key: str
    payload: dict[str, Any]
    state: str
    attempts: int
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    at: datetime
    level: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NewFile:
    """A file a job produces as it finishes (a batch's output and error files)."""

    ref: str  # the name of its reference in the job's result, e.g. "output_file_id"
    purpose: str
    filename: str
    content: bytes
    lines: int
