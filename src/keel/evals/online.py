"""Online evaluation: a rule per route scores a share of its live calls in the background,
from their stored traces, and attaches the scores to those traces (source `evaluator`).

Nothing on the request path waits: the evaluator reads traces after the recorder wrote
them. Each score keeps its verdict (the scorer's threshold) and `/api/stats` sums them up
per route or model version. Sampling is by trace id (a stable hash), so a share of 0.1
scores the same tenth of the calls however often it looks. Traces written while no
evaluator ran (Keel was stopped) are not scored afterwards: the evaluator starts from the
time it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import delete, select

from keel.embeddings.base import Embedder
from keel.errors import InvalidRequest, NotFound
from keel.evals.scorers import Deps, Observation, Scorer, build_scorers
from keel.evals.tables import OnlineRuleRow
from keel.store.db import Database
from keel.tracing.service import Tracing
from keel.tracing.store import TraceFilter

log = logging.getLogger("keel.evals")
SOURCE = "evaluator"
# Online scores are written as `online:ROUTE`; other evaluator scores (groundedness,
# API clients posting as an evaluator) have other authors and are not counted as online.
AUTHOR_PREFIX = "online:"
BATCH = 500
# Scorers that call a model or need an item's expected answer have nothing to read online.
ONLINE_SCORERS = ("regex", "json", "json_schema", "latency", "cost", "pii", "secrets",
                  "toxicity", "contains")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Rule:
    project_id: str
    route: str
    sample: float
    scorers: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {"route": self.route, "sample": self.sample, "scorers": self.scorers}


def sampled(trace_id: str, share: float) -> bool:
    """Whether a trace falls in the sampled share: a stable hash of its id, not a coin."""
    digest = hashlib.sha256(trace_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def check_scorers(specs: list[dict[str, Any]], embedder: Callable[[], Embedder | None]) -> None:
    for index, spec in enumerate(specs):
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind not in ONLINE_SCORERS:
            raise InvalidRequest(
                f"scorers[{index}].type: {kind!r} cannot score live calls (they have no "
                f"expected answer); use one of {', '.join(ONLINE_SCORERS)}",
                param=f"scorers[{index}].type",
                code="invalid_scorer",
            )
    build_scorers(specs, Deps(embedder=embedder))


class OnlineEvaluator:
    def __init__(
        self,
        database: Database,
        tracing: Tracing,
        embedder: Callable[[], Embedder | None],
        interval: float = 2.0,
    ):
        self.database, self.tracing, self.embedder = database, tracing, embedder
        self.interval = interval
        self.scored = 0  # scores written since start
        self._cursors: dict[tuple[str, str], int] = {}
        self._started_us = time.time_ns() // 1000
        self._task: asyncio.Task[None] | None = None

    # -- rules ----------------------------------------------------------------------------

    def put(self, project_id: str, route: str, sample: float, scorers: list[dict[str, Any]],
            actor: str) -> Rule:  # fmt: skip
        check_scorers(scorers, self.embedder)
        with self.database.session() as session:
            row = session.scalar(select(OnlineRuleRow).where(
                OnlineRuleRow.project_id == project_id, OnlineRuleRow.route == route))  # fmt: skip
            if row is None:
                row = OnlineRuleRow(project_id=project_id, route=route)
                session.add(row)
            row.sample, row.scorers, row.created_by = sample, scorers, actor[:64]
            row.updated_at = datetime.now(UTC)
        return Rule(project_id, route, sample, scorers)

    def rules(self, project_id: str | None = None) -> list[Rule]:
        with self.database.session() as session:
            query = select(OnlineRuleRow).order_by(OnlineRuleRow.route)
            if project_id is not None:
                query = query.where(OnlineRuleRow.project_id == project_id)
            return [Rule(r.project_id, r.route, r.sample, list(r.scorers))
                    for r in session.scalars(query)]  # fmt: skip

    def delete(self, project_id: str, route: str) -> None:
        with self.database.session() as session:
            gone = session.execute(delete(OnlineRuleRow).where(
                OnlineRuleRow.project_id == project_id, OnlineRuleRow.route == route))  # fmt: skip
            if not getattr(gone, "rowcount", 0):
                raise NotFound(f"no online rule for route '{route}'", param="route")

    # -- the background loop -------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="evals-online")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.once()
            except Exception:  # a store that does not answer: look again next time
                log.warning("online evaluation: a pass failed", exc_info=True)
            await asyncio.sleep(self.interval)

    async def once(self) -> int:
        """One pass over every rule: score the sampled traces written since the last."""
        written = 0
        for rule in await asyncio.to_thread(self.rules):
            written += await self._rule(rule)
        self.scored += written
        return written

    async def _rule(self, rule: Rule) -> int:
        key = (rule.project_id, rule.route)
        since = self._cursors.get(key, self._started_us)
        filters = TraceFilter(since_us=since, model=rule.route, status="ok")
        traces = await asyncio.to_thread(
            self.tracing.contents, rule.project_id, filters, limit=BATCH
        )
        if not traces:
            return 0
        scorers = build_scorers(rule.scorers, Deps(embedder=self.embedder), check=False)
        written = 0
        for trace in traces:
            if sampled(trace["trace_id"], rule.sample):
                written += await self._score(rule, trace, scorers)
        # The newest first: the next pass starts after the newest seen (a page that was
        # full leaves older ones behind, counted as skipped in the log).
        if len(traces) == BATCH:
            log.warning("online evaluation of %s: more than %d new traces in one pass; the "
                        "oldest were not scored", rule.route, BATCH)  # fmt: skip
        self._cursors[key] = max(t["start_us"] for t in traces) + 1
        return written

    async def _score(self, rule: Rule, trace: dict[str, Any], scorers: list[Scorer]) -> int:
        try:
            messages = orjson.loads(trace["input"]) if trace.get("input") else []
        except orjson.JSONDecodeError:
            messages = []
        observation = Observation(
            output=trace.get("output") or "", expected=None,
            input={"messages": messages if isinstance(messages, list) else []}, context=None,
            latency_ms=trace.get("duration_ms"), cost=trace.get("cost"),
            trace_id=trace["trace_id"],
        )  # fmt: skip
        written = 0
        for scorer in scorers:
            measured = await scorer.measure(observation)
            if measured.value is None:
                continue
            # The verdict is kept with the score (the scorer's threshold decides it), so
            # /api/stats counts passes without knowing the rule.
            score = {"name": scorer.metric, "kind": "numeric", "number": measured.value,
                     "label": None, "flag": scorer.passed(measured.value),
                     "comment": measured.detail or None,
                     "source": SOURCE, "author": f"{AUTHOR_PREFIX}{rule.route}"[:100]}  # fmt: skip
            await asyncio.to_thread(
                self.tracing.add_score, rule.project_id, trace["trace_id"], score
            )
            written += 1
        return written
