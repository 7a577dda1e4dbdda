"""The local executor over the real store (SQLite and PostgreSQL): every item once, retries
with their errors kept, cancellation, and a job taken over from a worker that died."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from keel.auth.keys import KeyService
from keel.jobs.executor import ExecutorOptions, Finish, ItemFailed, LocalExecutor
from keel.jobs.model import Item, Job, NewFile
from keel.jobs.store import Finished, JobStore, Op, Sent
from keel.store import migrate
from keel.store.db import Database

FAST = ExecutorOptions(
    concurrency=4, lease_seconds=2, heartbeat_seconds=0.05, poll_seconds=0.05, backoff_seconds=0.01
)


class Echo:
    """Doubles each item's number; fails the ones it is told to, some only at first."""

    name = "echo"

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.fail_always: set[str] = set()
        self.fail_first: set[str] = set()
        self.gate: asyncio.Event | None = None  # when set, items wait for it
        self.waiting = asyncio.Event()  # four items wait at the gate

    async def run_item(self, job: Job, item: Item) -> dict[str, Any]:
        self.calls[item.key] += 1
        if self.gate is not None:
            if sum(self.calls.values()) >= 4:
                self.waiting.set()
            await self.gate.wait()
        if item.key in self.fail_always:
            raise ItemFailed({"code": "bad_input", "message": f"{item.key} is bad"})
        if item.key in self.fail_first and self.calls[item.key] == 1:
            raise ItemFailed({"code": "upstream_error", "message": "try again"}, retryable=True)
        return {"value": item.payload["n"] * 2}

    async def finish(self, job: Job, cancelled: bool) -> Finish:
        return Finish(
            result={"summary": "ok"},
            files=(NewFile("output_file_id", "batch_output", "out.jsonl", b"{}\n", 1),),
        )


@pytest.fixture
def store(database_url: str) -> Iterator[JobStore]:
    database = Database(database_url)
    migrate.upgrade(database)
    KeyService(database).ensure_project()  # jobs belong to a project
    yield JobStore(database)
    database.dispose()


def make_job(store: JobStore, n: int) -> Job:
    return store.create("echo", "default", "k1", {}, [(f"item-{i}", {"n": i}) for i in range(n)])


async def run_until_final(store: JobStore, executor: LocalExecutor, job_id: str) -> Job:
    await executor.start()
    try:
        for _ in range(2000):
            job = store.get(job_id)
            assert job is not None
            if job.final:
                return job
            await asyncio.sleep(0.01)
        raise AssertionError(f"job {job_id} did not finish")
    finally:
        await executor.stop()


async def test_every_item_runs_once_and_the_job_keeps_its_results(store: JobStore) -> None:
    kind = Echo()
    job = make_job(store, 50)
    done = await run_until_final(store, LocalExecutor(store, {"echo": kind}, FAST), job.id)
    assert done.state == "succeeded"
    assert (done.done, done.failed, done.total) == (50, 0, 50)
    assert set(kind.calls.values()) == {1}
    items = store.items(job.id)
    assert [item.result for item in items] == [{"value": 2 * i} for i in range(50)]
    assert "output_file_id" in done.result
    assert done.result["summary"] == "ok"
    assert done.progress().rate is not None
    assert [e.message for e in store.events(job.id)][-1] == "succeeded: 50 done, 0 failed of 50"


async def test_a_failed_item_keeps_its_error_and_a_passing_failure_is_retried(
    store: JobStore,
) -> None:
    kind = Echo()
    kind.fail_always = {"item-1"}
    kind.fail_first = {"item-2"}
    job = make_job(store, 4)
    done = await run_until_final(store, LocalExecutor(store, {"echo": kind}, FAST), job.id)
    assert (done.done, done.failed) == (3, 1)
    by_key = {item.key: item for item in store.items(job.id)}
    assert by_key["item-1"].state == "failed"
    assert by_key["item-1"].error == {"code": "bad_input", "message": "item-1 is bad"}
    assert kind.calls["item-1"] == 1  # a bad input is not retried
    assert by_key["item-2"].state == "done"
    assert by_key["item-2"].attempts == 2


async def test_cancel_stops_new_items_and_cancels_the_rest(store: JobStore) -> None:
    kind = Echo()
    kind.gate = asyncio.Event()
    job = make_job(store, 100)
    executor = LocalExecutor(store, {"echo": kind}, FAST)
    await executor.start()
    try:
        await kind.waiting.wait()  # the four slots are busy
        store.request_cancel(job.id)
        executor.cancelled(job.id)
        kind.gate.set()
        for _ in range(1000):
            current = store.get(job.id)
            assert current is not None
            if current.final:
                break
            await asyncio.sleep(0.01)
    finally:
        await executor.stop()
    assert current is not None
    assert current.state == "cancelled"
    assert current.done == sum(kind.calls.values()) < 100
    counts = store.item_counts(job.id)
    assert counts["cancelled"] == 100 - current.done


async def test_a_queued_job_cancelled_never_runs(store: JobStore) -> None:
    job = make_job(store, 3)
    cancelled = store.request_cancel(job.id)
    assert cancelled is not None
    assert cancelled.state == "cancelled"
    assert store.item_counts(job.id) == {"cancelled": 3}


async def test_a_job_whose_worker_died_resumes_without_resending_what_was_in_flight(
    store: JobStore,
) -> None:
    job = make_job(store, 10)
    # A worker takes the job, records three items, sends a fourth and dies (lease runs out).
    dead = store.claim("dead-worker", 0.0, ["echo"])
    assert dead is not None
    assert dead.lease is not None
    items = store.next_items(job.id, -1, 4)
    assert store.write(job.id, dead.lease, [Sent(item.id) for item in items]) == [True] * 4
    store.write(job.id, dead.lease, [Finished(i.id, True, {"value": -1}) for i in items[:3]])
    kind = Echo()
    done = await run_until_final(store, LocalExecutor(store, {"echo": kind}, FAST), job.id)
    assert (done.done, done.failed) == (9, 1)
    assert "item-3" not in kind.calls  # in flight at the crash: failed, never sent again
    assert set(kind.calls) == {f"item-{i}" for i in range(4, 10)}
    assert set(kind.calls.values()) == {1}
    by_key = {item.key: item for item in store.items(job.id)}
    assert by_key["item-3"].error is not None
    assert by_key["item-3"].error["code"] == "interrupted"
    # The dead worker's lease can write nothing any more.
    assert store.write(job.id, dead.lease, [Finished(items[3].id, True, {})]) is None
    assert any("resumed by" in e.message for e in store.events(job.id))


class FlakyStore(JobStore):
    """Fails the first write that ends items, as a store that drops out for a moment."""

    failed_once = False

    def write(self, job_id: str, lease: str, ops: Sequence[Op]) -> list[bool] | None:
        if not self.failed_once and any(isinstance(op, Finished) for op in ops):
            self.failed_once = True
            raise OperationalError("UPDATE", {}, Exception("database is locked"))
        return super().write(job_id, lease, ops)


async def test_an_item_whose_end_was_not_recorded_ends_interrupted_not_resent(
    store: JobStore,
) -> None:
    flaky = FlakyStore(store.database)
    kind = Echo()
    job = make_job(flaky, 1)
    done = await run_until_final(flaky, LocalExecutor(flaky, {"echo": kind}, FAST), job.id)
    assert done.state == "succeeded"
    assert (done.done, done.failed) == (0, 1)
    assert kind.calls == {"item-0": 1}
    [item] = flaky.items(job.id)
    assert item.error is not None
    assert item.error["code"] == "interrupted"


async def test_a_stopped_worker_hands_its_job_over_at_once_and_nothing_is_lost(
    store: JobStore,
) -> None:
    kind = Echo()
    kind.gate = asyncio.Event()
    job = make_job(store, 20)
    first = LocalExecutor(store, {"echo": kind}, FAST)
    await first.start()
    await kind.waiting.wait()  # four items in flight
    stopping = asyncio.create_task(first.stop())  # as on SIGTERM: in-flight items end first
    await asyncio.sleep(0)
    kind.gate.set()
    await stopping
    handed = store.get(job.id)
    assert handed is not None
    assert handed.state == "running"
    assert handed.done == 4
    assert "sent" not in store.item_counts(job.id)
    # The lease was given back: the next worker takes the job without waiting for it to expire.
    second = LocalExecutor(store, {"echo": kind}, dataclasses.replace(FAST, lease_seconds=3600))
    done = await run_until_final(store, second, job.id)
    assert (done.done, done.failed) == (20, 0)
    assert set(kind.calls.values()) == {1}
    messages = [e.message for e in store.events(job.id)]
    assert not any("resumed by" in m for m in messages)  # nothing was lost in flight
    assert any(m.startswith("handed back:") for m in messages)
