"""The write path of traces: a bounded queue, a batch writer, a spill file, counted drops.

`submit()` is all the request path does: an append to a bounded deque. A writer task
takes batches (when one is full, or every flush interval), converts them on the loop in
slices between requests and writes them in a worker thread. While the store is down,
batches go to the spill file, which is replayed once a write succeeds again; while a
write is merely slow, the queue is kept under its high-water mark by spilling too.
A batch the store rejects for its data (not an outage) is split until the records it
still rejects are found; those go to the quarantine file, and the rest is stored.
Records are dropped, and counted in `keel_trace_records_dropped_total`, only when both
the queue and the spill are full.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from keel.tracing.convert import Converted
from keel.tracing.metrics import GatewayMetrics
from keel.tracing.model import RequestTrace
from keel.tracing.spill import QuarantineFile, SpillFile
from keel.tracing.store import store_unreachable

log = logging.getLogger("keel.tracing")

Write = Callable[[list[Converted]], None]
Convert = Callable[[RequestTrace], Converted]
CONVERT_SLICE = 16  # records converted between two turns of the event loop
MAX_CONVERT_SLICE = 128  # ... at most, however long the backlog
Export = Callable[[list[Converted]], None]
RECENT_IDS = 50_000  # ids of traces not in the store yet (queued or spilled), at most


class _Unreachable(Exception):
    """The store went away while a batch was being written: what is left to write."""

    def __init__(self, cause: Exception, rest: list[Converted]):
        super().__init__(str(cause))
        self.cause = cause
        self.rest = rest


class TraceRecorder:
    def __init__(
        self,
        write: Write,
        convert: Convert,
        spill: SpillFile,
        metrics: GatewayMetrics,
        *,
        queue_size: int = 20_000,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        retry_interval: float = 1.0,
        export: Export | None = None,
        quarantine: QuarantineFile | None = None,
    ):
        self._write = write
        self._convert_one = convert
        self.spill = spill
        self.quarantine = quarantine or QuarantineFile(spill.directory / "quarantine",
                                                       spill.max_bytes)  # fmt: skip
        self._metrics = metrics
        self._export = export
        self._queue: deque[RequestTrace] = deque()
        self._queue_size = queue_size
        self._high_water = max(batch_size, queue_size // 2)
        self._batch_size = batch_size
        self._interval = flush_interval
        self._retry_interval = retry_interval
        self._recent: OrderedDict[str, str] = OrderedDict()
        self._stranded: list[Converted] = []  # converted when close() cancelled the writer
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._down_until = 0.0  # monotonic time before which the store is not tried again
        self.store_down = False
        self.written = 0
        self.dropped = 0
        self.quarantined = 0
        # Called with each trace accepted (insights sample them); must not wait or raise.
        self.listener: Callable[[RequestTrace], None] | None = None

    # -- the request path ---------------------------------------------------------------

    def submit(self, trace: RequestTrace) -> None:
        """Queue a finished trace; never blocks, never raises."""
        recent = self._recent
        recent[trace.trace_id] = trace.principal.project_id
        if len(recent) > RECENT_IDS:
            recent.popitem(last=False)
        if len(self._queue) >= self._queue_size or self._closing:
            self._drop(1, "queue_full")
            return
        self._queue.append(trace)
        if self.listener is not None:
            self.listener(trace)
        if self._task is None:
            self.start()
        elif len(self._queue) >= self._batch_size and self._wakeup is not None:
            self._wakeup.set()

    def recent(self, trace_id: str) -> str | None:
        """The project of a trace submitted lately (it may not be in the store yet)."""
        return self._recent.get(trace_id)

    def depth(self) -> int:
        return len(self._queue)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer on the running loop (also replays spill files left earlier)."""
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="trace-writer")

    async def flush(self) -> None:
        """Write (or spill) everything queued so far; for tests and shutdown."""
        while self._queue:
            await self._process(self._take())

    async def close(self, deadline: float = 30.0) -> None:
        """Flush everything, to the store if it answers, else to the spill file."""
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            assert self._wakeup is not None
            self._wakeup.set()
            try:
                async with asyncio.timeout(deadline):
                    await task
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        # Whatever is left (a timed-out write, a cancelled writer) goes to the spill file.
        left = list(self._queue)
        self._queue.clear()
        records, self._stranded = self._stranded, []
        if left:
            records += await self._convert(left)
        if records:
            await asyncio.to_thread(self._spill_records, records)
        await asyncio.to_thread(self.spill.close)

    # -- the writer ---------------------------------------------------------------------

    def _take(self) -> list[RequestTrace]:
        queue = self._queue
        return [queue.popleft() for _ in range(min(self._batch_size, len(queue)))]

    async def _run(self) -> None:
        assert self._wakeup is not None
        wakeup = self._wakeup
        while True:
            if len(self._queue) < self._batch_size and not self._closing:
                wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval):
                        await wakeup.wait()
            try:
                if self._queue:
                    await self._process(self._take())
                elif self._closing:
                    await asyncio.to_thread(self._replay)  # one last try; else the next start
                    return
                elif time.monotonic() >= self._down_until:
                    await asyncio.to_thread(self._replay)
            except Exception:
                # A bug, not an outage (outages are handled in the thread): keep writing.
                log.exception("trace writer failed; continuing")
                await asyncio.sleep(self._interval)

    async def _convert(self, batch: list[RequestTrace]) -> list[Converted]:
        """Rows for a batch, made on the loop in slices between requests.

        On the loop rather than in the thread: a thread doing Python work takes the GIL
        from the loop for whole switch intervals; slices of the loop's own time do not.
        """
        records: list[Converted] = []
        # A backlog means conversion falls behind the requests: take longer turns, so the
        # writer catches up instead of the queue (and memory) growing until it spills.
        backlog = len(self._queue) // max(1, self._batch_size)
        step = min(CONVERT_SLICE * (1 + backlog), MAX_CONVERT_SLICE)
        done = 0
        try:
            for start in range(0, len(batch), step):
                chunk = batch[start : start + step]
                converted = []
                for trace in chunk:
                    try:
                        converted.append(self._convert_one(trace))
                    except Exception:
                        log.exception("could not convert trace %s; dropped", trace.trace_id)
                        self._drop(1, "invalid")
                self._metrics.observe(converted)
                records += converted
                done = start + len(chunk)
                if len(chunk) == step:
                    await asyncio.sleep(0)
        except asyncio.CancelledError:
            # close() gave up waiting for the writer: this batch was taken from the queue
            # and not handed on yet. Give it back to close(), which spills it.
            self._stranded += records
            self._queue.extendleft(reversed(batch[done:]))
            raise
        return records

    async def _process(self, batch: list[RequestTrace]) -> None:
        records = await self._convert(batch)
        write = asyncio.ensure_future(asyncio.to_thread(self._write_batch, records))
        while True:
            done, _ = await asyncio.wait({write}, timeout=self._interval)
            if done:
                break
            # The store is slow: keep memory bounded by spilling what waits beyond half.
            while len(self._queue) >= self._high_water:
                spilled = await self._convert(self._take())
                await asyncio.to_thread(self._spill_records, spilled)
        if write.result():
            self._forget(records)

    def _forget(self, records: list[Converted]) -> None:
        # Stored traces are found in the store; only queued and spilled ones need an entry
        # here. Without this the map fills to RECENT_IDS (~8 MB) under any steady load.
        recent = self._recent
        for record in records:
            recent.pop(record.trace["trace_id"], None)

    # -- in the worker thread -----------------------------------------------------------

    def _write_batch(self, records: list[Converted]) -> bool:
        """Write to the store, or spill; True when the records are in the store."""
        if self._export is not None and records:
            self._export(records)
        if not records:
            return False
        if time.monotonic() < self._down_until:
            self._spill_records(records)
            return False
        try:
            stored = self._store(records)
        except _Unreachable as exc:
            self._store_failed(exc.cause)
            self._spill_records(exc.rest)
            return False
        self._store_ok(stored)
        if self.spill.pending():
            self._replay()
        return True

    def _store(self, records: list[Converted]) -> int:
        """Write `records`; returns how many the store took, the rest being quarantined.

        A batch the store rejects, other than for being unreachable, is split in halves
        until each record it still rejects is alone: one bad record costs about twice
        log2(batch) writes, and never holds back the records around it. Raises
        `_Unreachable` (with what is not written yet) when the store goes away.
        """
        parts = [records]
        stored = 0
        while parts:
            part = parts.pop()
            try:
                self._write(part)
            except Exception as exc:
                if store_unreachable(exc):
                    raise _Unreachable(exc, [*part, *(r for p in parts for r in p)]) from exc
                if len(part) == 1:
                    self._quarantine(part[0], exc)
                else:
                    half = len(part) // 2
                    parts += [part[half:], part[:half]]  # the first half is written first
            else:
                stored += len(part)
        return stored

    def _quarantine(self, record: Converted, exc: Exception) -> None:
        reason = f"{exc.__class__.__name__}: {exc}"[:1000]
        try:
            kept = self.quarantine.append(record, reason)
        except OSError:
            log.exception("cannot write the trace quarantine file")
            kept = False
        if not kept:
            self._drop(1, "quarantine_full")
            return
        self.quarantined += 1
        self._metrics.quarantined.inc()
        log.warning("the trace store rejected trace %s (%s); kept in %s",
                    record.trace.get("trace_id"), reason, self.quarantine.directory)  # fmt: skip

    def _replay(self) -> None:
        if not self.spill.pending():
            return
        unreadable = self.spill.unreadable
        stored = 0

        def write(batch: list[Converted]) -> None:
            nonlocal stored
            stored += self._store(batch)

        failure: Exception | None = None
        try:
            self.spill.replay(write, self._batch_size)
        except _Unreachable as exc:
            failure = exc.cause  # the segment stays; it is replayed from its start later
        except Exception as exc:
            failure = exc
        if self.spill.unreadable > unreadable:
            self._drop(self.spill.unreadable - unreadable, "unreadable")
        if stored:
            log.info("replayed %d trace records from spill files", stored)
            self._metrics.replayed.inc(stored)
            self._count_written(stored)
        if failure is not None:
            self._store_failed(failure)
        elif stored:
            self._store_ok(0)

    def _store_failed(self, exc: Exception) -> None:
        if not self.store_down:
            log.warning("trace store unavailable (%s); spilling to %s", exc, self.spill.directory)
        self.store_down = True
        self._down_until = time.monotonic() + self._retry_interval

    def _store_ok(self, count: int) -> None:
        if self.store_down:
            log.info("trace store is back")
        self.store_down = False
        self._down_until = 0.0
        self._count_written(count)

    def _count_written(self, count: int) -> None:
        if count:
            self.written += count
            self._metrics.traces_written.inc(count)

    def _spill_records(self, records: list[Converted]) -> None:
        try:
            kept = self.spill.append(records)
        except OSError:
            log.exception("cannot write the trace spill file")
            kept = 0
        if kept:
            self._metrics.spilled.inc(kept)
        if kept < len(records):
            self._drop(len(records) - kept, "spill_full")

    def expire_files(self, before: float) -> None:
        """Delete spill and quarantine files last written before `before` (epoch seconds).

        Retention runs it (in a worker thread): their records are older than the traces
        kept, so replaying them would only have them deleted again. Counted as dropped.
        """
        for files, reason in ((self.spill, "expired"), (self.quarantine, "quarantine_expired")):
            count, records = files.expire(before)
            if count:
                log.warning("deleted %d trace %s file(s) older than the retention (%d records)",
                            count, "spill" if files is self.spill else "quarantine",
                            records)  # fmt: skip
                self._drop(records, reason)

    def _drop(self, count: int, reason: str) -> None:
        self.dropped += count
        self._metrics.dropped.labels(reason).inc(count)
