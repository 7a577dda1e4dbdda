"""The tracing service the server wires in: starts the gateway's traces, owns the recorder,
the Prometheus metrics and the optional OTLP export, and answers queries of stored traces
(the API and the console ask it, never the store)."""

from __future__ import annotations

import asyncio
import builtins
import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

from keel.calls import Call
from keel.settings import Settings
from keel.store.db import Database
from keel.tracing.convert import Converted, convert
from keel.tracing.metrics import GatewayMetrics
from keel.tracing.model import RequestTrace
from keel.tracing.otlp import OtlpExporter
from keel.tracing.recorder import TraceRecorder
from keel.tracing.retention import Policy, Retention
from keel.tracing.spill import SpillFile
from keel.tracing.stats import GroupBy, stats
from keel.tracing.store import PRUNE_CHUNK, TraceFilter, TraceStore


class Tracing:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        breakers: Callable[[], dict[str, str]],
        *,
        write: Callable[[list[Converted]], None] | None = None,
    ):
        """`write` replaces the store's batch insert (tests inject faults through it)."""
        self.enabled = settings.tracing
        self.store = TraceStore(database)
        spill = SpillFile(settings.data_dir / "spill", settings.trace_spill_max_bytes)
        self.metrics = GatewayMetrics(breakers, self._depth, lambda: spill.size)
        self.exporter = OtlpExporter(settings.otlp_endpoint) if settings.otlp_endpoint else None
        self.recorder = TraceRecorder(
            write or self.store.write,
            functools.partial(convert, keep_content=settings.trace_content),
            spill,
            self.metrics,
            queue_size=settings.trace_queue_size,
            batch_size=settings.trace_batch_size,
            flush_interval=settings.trace_flush_interval,
            export=self.exporter,
        )
        max_age = settings.trace_retention_days * 86_400 or None
        self.retention = Retention(
            [(self.store, Policy(max_age, settings.trace_retention_max_rows or None))],
            [(self.recorder.expire_files, max_age)],
            interval_s=settings.trace_retention_interval,
            chunk=PRUNE_CHUNK,
            counted=self._pruned,
        )

    def _pruned(self, table: str, reason: str, count: int) -> None:
        self.metrics.pruned.labels(reason).inc(count)

    def _depth(self) -> int:
        return self.recorder.depth()

    def start(self, call: Call, start_ns: int) -> RequestTrace | None:
        """A trace for one gateway call, or None when tracing is off (the gateway's own;
        nothing else starts one)."""
        if not self.enabled:
            return None
        # Ids begin with their start in milliseconds, as the server's do: retention finds
        # old traces by their id (see TraceStore.prune).
        trace_id = call.trace_id or f"{start_ns // 1_000_000:012x}{os.urandom(10).hex()}"
        return RequestTrace(
            self.recorder.submit,
            trace_id,
            call.op,
            call.principal,
            call.body,
            start_ns=start_ns,
            auth=call.auth_ns,
            session_id=call.session_id,
            metadata=dict(call.metadata),
        )

    # -- queries: what the API and the console ask of stored traces. Each blocks on the
    # -- database: call them from a worker thread (`prune` is a coroutine of its own).

    def get(self, project_id: str, trace_id: str) -> dict[str, Any] | None:
        """The trace with its spans as a tree and its scores; None outside the project."""
        return self.store.get(project_id, trace_id)

    def exists(self, project_id: str, trace_id: str) -> bool:
        return self.store.exists(project_id, trace_id)

    def add_score(self, project_id: str, trace_id: str, score: dict[str, Any]) -> dict[str, Any]:
        return self.store.add_score(project_id, trace_id, score)

    def feedback_of(
        self, project_id: str, trace_ids: Sequence[str], sources: Sequence[str]
    ) -> dict[str, builtins.list[float]]:
        """Per trace, its numeric and boolean scores of `sources` (insights' feedback)."""
        return self.store.feedback_of(project_id, trace_ids, sources)

    def count_before(self, before_us: int) -> int:
        """Traces of every project started before `before_us` (a prune's dry run)."""
        return self.store.count_before(before_us)

    async def prune(self, before_us: int, limit: int) -> int:
        """Delete at most `limit` traces of every project started before `before_us`,
        oldest first, in short transactions; returns how many."""
        return await self.retention.prune(self.store, before_us, limit=limit)

    def stats(
        self, project_id: str, *, since_us: int, until_us: int, bucket_s: int,
        group_by: GroupBy = "none",
    ) -> list[dict[str, Any]]:  # fmt: skip
        """Aggregates per time bucket (and group): counts, errors, latency, tokens, cost."""
        return stats(self.store.database, project_id, since_us=since_us, until_us=until_us,
                     bucket_s=bucket_s, group_by=group_by)  # fmt: skip

    def list(
        self, project_id: str, filters: TraceFilter, *, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first: a page of trace summaries and the next page's cursor (None: the end)."""
        return self.store.list(project_id, filters, limit=limit, cursor=cursor)

    def contents(
        self,
        project_id: str,
        filters: TraceFilter,
        *,
        limit: int,
        score: tuple[str, float | None, float | None] | None = None,
    ) -> builtins.list[dict[str, Any]]:
        """Newest first, whole traces (full input and output) matching the filters."""
        return self.store.contents(project_id, filters, limit=limit, score=score)

    def score_summary(
        self, project_id: str, since_us: int, source: str, author_like: str = "%"
    ) -> builtins.list[dict[str, Any]]:
        """Per route and score name: count and mean of `source` scores since `since_us`
        whose author matches the LIKE pattern `author_like`."""
        return self.store.score_summary(project_id, since_us, source, author_like)

    def start_writer(self) -> None:
        """Start the writer (when tracing is on) and retention (traces stored earlier are
        deleted on time even with tracing off)."""
        if self.enabled:
            self.recorder.start()
        self.retention.start()

    async def close(self) -> None:
        await self.retention.close()
        await self.recorder.close()
        if self.exporter is not None:
            await asyncio.to_thread(self.exporter.close)
