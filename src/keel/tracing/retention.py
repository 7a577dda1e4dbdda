"""Retention: delete what is older than its age limit or beyond its row limit, in the
background, a short transaction at a time, so writes never wait long behind it.

Any table kept for a while plugs in as a `Prunable` with its own `Policy` (traces today;
job records can follow); local files plug in as functions that expire them by age.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("keel.tracing")

PAUSE_S = 0.05  # between two chunks: the store's other writers get their turn
FIRST_SWEEP_S = 60.0  # after start, so a restart loop does not sweep on every start


class Prunable(Protocol):
    """Rows with a start time, deleted oldest first. Times are microseconds since the epoch."""

    @property
    def name(self) -> str: ...

    def count_before(self, before_us: int) -> int:
        """Rows started before `before_us`."""
        ...

    def boundary(self, keep: int) -> int | None:
        """A time before which pruning leaves the `keep` newest rows; None when no more."""
        ...

    def prune(self, before_us: int, limit: int) -> int:
        """Delete up to `limit` of the oldest rows started before `before_us`; how many."""
        ...


@dataclass(frozen=True, slots=True)
class Policy:
    max_age_s: float | None = None  # None: kept whatever its age
    max_rows: int | None = None  # None: no cap on the number of rows


# (table name, reason: "age" | "rows" | "manual", rows deleted)
Counted = Callable[[str, str, int], None]
# Deletes local files last written before a time (epoch seconds).
ExpireFiles = Callable[[float], None]


class Retention:
    def __init__(
        self,
        tables: Sequence[tuple[Prunable, Policy]],
        files: Sequence[tuple[ExpireFiles, float | None]] = (),
        *,
        interval_s: float = 600.0,
        chunk: int = 500,
        pause_s: float = PAUSE_S,
        counted: Counted | None = None,
        clock: Callable[[], float] = time.time,
    ):
        """`files`: (expire, max age in seconds or None) each."""
        self._tables = list(tables)
        self._files = list(files)
        self._interval = interval_s
        self._chunk = chunk
        self._pause = pause_s
        self._counted = counted or (lambda name, reason, count: None)
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self.failures = 0  # sweeps that failed (the store was away); retried next interval

    @property
    def active(self) -> bool:
        """Whether any policy deletes anything."""
        return any(p.max_age_s or p.max_rows for _, p in self._tables) or any(
            age for _, age in self._files
        )

    async def sweep(self) -> dict[str, int]:
        """Apply every policy now; returns rows deleted per table."""
        deleted: dict[str, int] = {}
        now = self._clock()
        for table, policy in self._tables:
            count = 0
            if policy.max_age_s:
                before = int((now - policy.max_age_s) * 1_000_000)
                count += await self.prune(table, before, reason="age")
            if policy.max_rows:
                before_rows = await asyncio.to_thread(table.boundary, policy.max_rows)
                if before_rows is not None:
                    count += await self.prune(table, before_rows, reason="rows")
            deleted[table.name] = count
        for expire, age in self._files:
            if age:
                await asyncio.to_thread(expire, now - age)
        return deleted

    async def prune(
        self, table: Prunable, before_us: int, *, limit: int | None = None, reason: str = "manual"
    ) -> int:
        """Delete rows of `table` started before `before_us` (at most `limit`), a chunk per
        transaction with a pause between; returns how many."""
        total = 0
        while limit is None or total < limit:
            size = self._chunk if limit is None else min(self._chunk, limit - total)
            count = await asyncio.to_thread(table.prune, before_us, size)
            if count:
                total += count
                self._counted(table.name, reason, count)
            if count < size:
                break
            await asyncio.sleep(self._pause)
        return total

    # -- in the background ---------------------------------------------------------------

    def start(self, first_s: float = FIRST_SWEEP_S) -> None:
        if self._task is None and self.active:
            self._task = asyncio.get_running_loop().create_task(
                self._run(first_s), name="retention"
            )

    async def _run(self, first_s: float) -> None:
        await asyncio.sleep(first_s)
        while True:
            started = time.monotonic()
            try:
                deleted = await self.sweep()
            except Exception as exc:  # the store is away, or a bug: retry next time
                self.failures += 1
                log.warning("retention sweep failed (%s: %s); retrying in %.0f s",
                            exc.__class__.__name__, exc, self._interval)  # fmt: skip
            else:
                if any(deleted.values()):
                    log.info("retention deleted %s in %.1f s",
                             ", ".join(f"{n} {name}" for name, n in deleted.items() if n),
                             time.monotonic() - started)  # fmt: skip
            await asyncio.sleep(self._interval)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
