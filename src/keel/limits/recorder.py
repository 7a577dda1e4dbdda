"""Writes what requests leave behind, in the background: last-used times, spend, summaries.

Requests only touch in-memory buffers; a task flushes them every few seconds in a worker
thread. A failed flush keeps its data for the next one; overflow is counted, not hidden.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from keel.auth import audit
from keel.limits.admission import SpendSink
from keel.limits.store import SpendDeltas, SpendStore
from keel.store.db import Database

log = logging.getLogger("keel.limits")

_MAX_AUDITS = 10_000
_MAX_REJECTION_SOURCES = 1_000


class UsageRecorder(SpendSink):
    def __init__(
        self,
        database: Database,
        spend: SpendStore,
        record_last_used: Callable[[dict[str, datetime]], None],
        *,
        interval: float = 2.0,
    ):
        self._db = database
        self.spend_store = spend
        self._record_last_used = record_last_used
        self.interval = interval
        self._last_used: dict[str, float] = {}
        self._spend: SpendDeltas = {}
        self._audits: deque[tuple[str, str, str, str, dict[str, Any]]] = deque()
        self._rejected: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None
        # Exported as metrics.
        self.dropped = 0
        self.flush_failures = 0

    # -- from the request path (no I/O) ----------------------------------------------

    def touch(self, key_id: str) -> None:
        self._last_used[key_id] = time.time()

    def rejected(self, source: str) -> None:
        """Count a refused key; flushed as one `key.rejected` audit record per interval."""
        if source in self._rejected or len(self._rejected) < _MAX_REJECTION_SOURCES:
            self._rejected[source] += 1
        else:
            self._rejected["(other)"] += 1

    def add_spend(self, subject: str, period: str, amount: float, tokens: int) -> None:
        old_amount, old_tokens = self._spend.get((subject, period), (0.0, 0))
        self._spend[(subject, period)] = (old_amount + amount, old_tokens + tokens)

    def audit(self, project_id: str, action: str, target_type: str, target_id: str,
              after: dict[str, Any]) -> None:  # fmt: skip
        if len(self._audits) >= _MAX_AUDITS:
            self.dropped += 1
            return
        self._audits.append((project_id, action, target_type, target_id, after))

    # -- background ------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()

    async def flush(self) -> None:
        """Hand the buffers to a worker thread; whatever fails to write is kept for later."""
        last_used, self._last_used = self._last_used, {}
        spend, self._spend = self._spend, {}
        audits, self._audits = self._audits, deque()
        rejected, self._rejected = self._rejected, Counter()
        if not (last_used or spend or audits or rejected):
            return
        try:
            await asyncio.to_thread(self._write, last_used, spend, audits, rejected)
        except Exception:
            self.flush_failures += 1
            log.exception("writing key usage and spend failed; kept for the next try")
            for key_id, at in last_used.items():
                self._last_used.setdefault(key_id, at)
            for where, (amount, tokens) in spend.items():
                self.add_spend(where[0], where[1], amount, tokens)
            self._audits.extendleft(reversed(audits))
            self._rejected.update(rejected)

    def _write(
        self,
        last_used: dict[str, float],
        spend: SpendDeltas,
        audits: deque[tuple[str, str, str, str, dict[str, Any]]],
        rejected: Counter[str],
    ) -> None:
        if spend:
            self.spend_store.add(spend)
        if last_used:
            self._record_last_used(
                {k: datetime.fromtimestamp(at, UTC) for k, at in last_used.items()}
            )
        if audits or rejected:
            with self._db.session() as session:
                for project_id, action, target_type, target_id, after in audits:
                    audit.record(session, "keel", action, target_type, target_id, after=after,
                                 project_id=project_id)  # fmt: skip
                if rejected:
                    top = dict(rejected.most_common(20))
                    audit.record(session, "keel", "key.rejected", "key", "*",
                                 after={"count": sum(rejected.values()), "sources": top,
                                        "interval_s": self.interval})  # fmt: skip

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
