"""Executors run jobs' items; the local one runs them in the Keel process itself.

What a job guarantees (docs/jobs.md says it at length):
- an item is recorded done at most once: its result and its done mark are one transaction,
  written under the job's lease, and a worker that lost the lease can write nothing;
- an item is sent upstream at most once per attempt: the attempt is committed as `sent`
  before the call, and an item found `sent` by the worker that takes over a dead one's job
  is failed as interrupted, never sent again. So no item is ever sent twice across a crash;
  the price is that the few in flight at the crash end in the error file.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from keel.jobs.model import Item, Job, NewFile
from keel.jobs.store import Finished, JobStore, Op, Requeued, Sent

log = logging.getLogger("keel.jobs")


class ItemFailed(Exception):
    """An item's attempt failed; `error` is kept with the item. `retryable`: another attempt
    may succeed (an upstream that failed), after `retry_after` seconds when given. `paced`:
    the key's own limits refused it before anything was sent, so waiting costs no attempt."""

    def __init__(
        self,
        error: dict[str, Any],
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        paced: bool = False,
    ):
        super().__init__(error.get("message", "item failed"))
        self.error = error
        self.retryable = retryable or paced
        self.retry_after = retry_after
        self.paced = paced

    def as_dict(self) -> dict[str, Any]:
        """The failure as JSON, to cross a process boundary (a Ray actor's answer)."""
        return {
            "error": self.error,
            "retryable": self.retryable,
            "retry_after": self.retry_after,
            "paced": self.paced,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ItemFailed:
        return cls(
            dict(data["error"]),
            retryable=bool(data.get("retryable")),
            retry_after=data.get("retry_after"),
            paced=bool(data.get("paced")),
        )


@dataclass(frozen=True, slots=True)
class Finish:
    """How a job ends once every item has: its state, result references and files."""

    state: str = "succeeded"
    result: dict[str, Any] | None = None
    files: tuple[NewFile, ...] = ()
    error: str | None = None


class JobKind(Protocol):
    """What one kind of job does with an item, and how the job ends (a batch: its files).

    `run_item` returns the item's result or raises ItemFailed. `finish` is called once
    every item has ended (or the job was cancelled) and may be called again after a crash.
    """

    name: str

    async def run_item(self, job: Job, item: Item) -> dict[str, Any]: ...

    async def finish(self, job: Job, cancelled: bool) -> Finish: ...


class Executor(Protocol):
    """Runs the jobs of the kinds it was given, from the store. A Ray executor implements
    the same three methods, sending items to Ray tasks and writing results back here."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def wake(self) -> None:
        """A job was created: look now rather than at the next poll."""
        ...

    def cancelled(self, job_id: str) -> None:
        """The job was cancelled here: stop starting its items now, not at the next beat."""
        ...


@dataclass(frozen=True, slots=True)
class ExecutorOptions:
    concurrency: int = 32  # items in flight at once, over all jobs
    lease_seconds: float = 10.0  # a worker silent this long has died: its job is taken over
    heartbeat_seconds: float = 0.5  # lease renewal, and how soon a cancel from elsewhere is seen
    poll_seconds: float = 1.0  # looking for jobs when nobody woke the executor
    max_attempts: int = 3  # per item, counting the first
    backoff_seconds: float = 0.5  # before the second attempt; doubles after each
    backoff_max_seconds: float = 30.0
    page: int = 256  # items read from the store at a time
    flush_max: int = 512  # item writes in one transaction


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class _Ledger:
    """Group commit: item writes from every task of a job go in one transaction every few
    milliseconds, and each task goes on only once its write is committed."""

    def __init__(self, store: JobStore, job_id: str, lease: str, flush_max: int):
        self.store, self.job_id, self.lease, self.flush_max = store, job_id, lease, flush_max
        self._pending: list[tuple[Op, asyncio.Future[bool]]] = []
        self._wakeup = asyncio.Event()
        self.lost = False
        self._task = asyncio.create_task(self._run(), name=f"ledger-{job_id}")

    async def write(self, op: Op) -> bool:
        if self.lost:
            return False
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((op, future))
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch, self._pending = (
                    self._pending[: self.flush_max],
                    self._pending[self.flush_max :],
                )
                try:
                    applied = await asyncio.to_thread(
                        self.store.write, self.job_id, self.lease, [op for op, _ in batch]
                    )
                except Exception as error:  # the store failed: nothing of this batch is known
                    log.exception("job %s: could not record %d items", self.job_id, len(batch))
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                if applied is None:
                    self.lost = True
                for (_, future), ok in zip(batch, applied or [False] * len(batch), strict=True):
                    if not future.done():
                        future.set_result(ok)

    async def close(self) -> None:
        # Called once every task awaited its writes: nothing is pending.
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class LeaseLost(Exception):
    """Another worker holds the job now; this one stops touching it."""


class LocalExecutor:
    """Runs jobs in this process: bounded concurrency over all jobs, leases renewed by a
    heartbeat, retries with exponential backoff, cancellation seen within a heartbeat."""

    def __init__(
        self,
        store: JobStore,
        kinds: dict[str, JobKind],
        options: ExecutorOptions | None = None,
        *,
        worker: str | None = None,
        on_item: Callable[[Job, bool], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self.store = store
        self.kinds = kinds
        self.options = options or ExecutorOptions()
        self.worker = worker or worker_name()
        self.on_item = on_item  # metrics: called as each item ends (ok or not)
        self._sleep = sleep
        self._slots = asyncio.Semaphore(self.options.concurrency)
        self._wake = asyncio.Event()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._cancels: dict[str, asyncio.Event] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def running_jobs(self) -> list[str]:
        return list(self._running)

    async def start(self) -> None:
        if self._loop_task is None:
            self._stopping = False
            self._slots = asyncio.Semaphore(self.options.concurrency)  # options as they are now
            self._loop_task = asyncio.create_task(self._loop(), name="jobs-executor")

    async def stop(self) -> None:
        """Stop starting items, let those in flight end and be recorded, give leases back."""
        self._stopping = True
        self._wake.set()
        for event in self._cancels.values():
            event.set()
        if self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None

    def wake(self) -> None:
        self._wake.set()

    def kind_for(self, name: str) -> JobKind:
        """What runs the items of a job of this kind here (the Ray executor sends some to Ray)."""
        return self.kinds[name]

    def cancelled(self, job_id: str) -> None:
        event = self._cancels.get(job_id)
        if event is not None:
            event.set()

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                job = await asyncio.to_thread(
                    self.store.claim, self.worker, self.options.lease_seconds, list(self.kinds)
                )
            except Exception:
                log.exception("jobs: could not look for work")
                job = None
            if job is not None:
                self._cancels[job.id] = asyncio.Event()
                task = asyncio.create_task(self._run_job(job), name=f"job-{job.id}")
                self._running[job.id] = task
                task.add_done_callback(functools.partial(self._forget, job.id))
                continue  # more may be waiting
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.options.poll_seconds)

    def _forget(self, job_id: str, _task: object = None) -> None:
        self._running.pop(job_id, None)
        self._cancels.pop(job_id, None)

    async def _run_job(self, job: Job) -> None:
        lease = job.lease
        assert lease is not None
        cancel = self._cancels[job.id]
        if job.state == "cancelling":
            cancel.set()
        lost = asyncio.Event()
        beat = asyncio.create_task(self._heartbeat(job, lease, cancel, lost))
        ledger = _Ledger(self.store, job.id, lease, self.options.flush_max)
        kind = self.kind_for(job.kind)
        tasks: set[asyncio.Task[None]] = set()
        try:
            after = -1
            while not (cancel.is_set() or lost.is_set() or self._stopping):
                page = await asyncio.to_thread(
                    self.store.next_items, job.id, after, self.options.page
                )
                if not page:
                    break
                for item in page:
                    after = item.ordinal
                    await self._slots.acquire()
                    if cancel.is_set() or lost.is_set() or self._stopping:
                        self._slots.release()
                        break
                    task = asyncio.create_task(self._run_item(kind, job, item, ledger, cancel))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            await ledger.close()
            if lost.is_set() or ledger.lost:
                log.warning("job %s: its lease went to another worker; stopped here", job.id)
                return
            stopping = f"{self.worker} is stopping" if self._stopping else None
            if self._stopping and not cancel.is_set():
                await asyncio.to_thread(self.store.release, job.id, lease, stopping)
                return
            current = await asyncio.to_thread(self.store.get, job.id)
            assert current is not None
            cancelled = current.state == "cancelling"
            left = await asyncio.to_thread(self.store.next_items, job.id, -1, 1)
            if left and not cancelled:
                # Items were requeued for a retry after the page passed them (or the worker is
                # stopping): go round again, here or elsewhere.
                await asyncio.to_thread(self.store.release, job.id, lease, stopping)
                self._wake.set()
                return
            if self._stopping and cancel.is_set() and not cancelled:
                await asyncio.to_thread(self.store.release, job.id, lease, stopping)
                return
            if await asyncio.to_thread(self.store.interrupt_sent, job.id, lease) is None:
                return  # the lease went to another worker meanwhile
            current = await asyncio.to_thread(self.store.get, job.id) or current
            try:
                finish = await kind.finish(current, cancelled)
            except Exception as error:
                log.exception("job %s: could not finish", job.id)
                finish = Finish(state="failed", error=f"could not finish: {error}")
            state = "cancelled" if cancelled else finish.state
            await asyncio.to_thread(
                lambda: self.store.finish(
                    job.id,
                    lease,
                    state,
                    result=finish.result,
                    files=finish.files,
                    error=finish.error,
                )
            )
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    async def _heartbeat(
        self, job: Job, lease: str, cancel: asyncio.Event, lost: asyncio.Event
    ) -> None:
        while True:
            await asyncio.sleep(self.options.heartbeat_seconds)
            try:
                state = await asyncio.to_thread(
                    self.store.heartbeat, job.id, lease, self.options.lease_seconds
                )
            except Exception:
                log.exception("job %s: heartbeat failed", job.id)
                continue
            if state is None:
                lost.set()
                cancel.set()
                return
            if state in ("cancelling", "cancelled"):
                cancel.set()

    async def _run_item(
        self, kind: JobKind, job: Job, item: Item, ledger: _Ledger, cancel: asyncio.Event
    ) -> None:
        held = True

        def free_slot() -> None:
            # The call is over: the next item may start while this one's end is committed
            # (its `sent` mark then joins the same transaction as this `done` mark).
            nonlocal held
            if held:
                held = False
                self._slots.release()

        try:
            attempt = item.attempts
            while True:
                if not await ledger.write(Sent(item.id)):
                    return  # lease lost, or the item is no longer queued
                attempt += 1
                try:
                    result = await kind.run_item(job, item)
                except ItemFailed as failure:
                    if failure.paced:
                        attempt -= 1
                    if not (failure.retryable and attempt < self.options.max_attempts):
                        free_slot()
                        await ledger.write(Finished(item.id, False, failure.error))
                        self._count(job, False)
                        return
                    await ledger.write(Requeued(item.id, failure.error))
                    if cancel.is_set():
                        return  # stays queued: cancelled with the job, or resumed after a stop
                    await self._backoff(attempt, failure.retry_after, cancel)
                    if cancel.is_set():
                        return
                    continue
                except Exception as error:  # a bug in the kind: keep it with the item
                    log.exception("job %s item %s failed", job.id, item.key)
                    error_body = {
                        "code": "internal_error",
                        "message": f"{type(error).__name__}: {error}",
                    }
                    free_slot()
                    await ledger.write(Finished(item.id, False, error_body))
                    self._count(job, False)
                    return
                free_slot()
                await ledger.write(Finished(item.id, True, result))
                self._count(job, True)
                return
        except Exception:
            # The store failed a write (the ledger logged it): the item stays queued and is
            # taken up again, or stays sent and ends as interrupted when the job does.
            log.warning("job %s item %s: its state could not be recorded", job.id, item.key)
        finally:
            free_slot()

    async def _backoff(
        self, attempt: int, retry_after: float | None, cancel: asyncio.Event
    ) -> None:
        delay = min(
            self.options.backoff_seconds * 2 ** (attempt - 1), self.options.backoff_max_seconds
        )
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.options.backoff_max_seconds))
        delay *= 1 + random.random() * 0.1  # jitter, so retries from many items spread out
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(cancel.wait(), delay)

    def _count(self, job: Job, ok: bool) -> None:
        if self.on_item is not None:
            self.on_item(job, ok)
