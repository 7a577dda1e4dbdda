"""Retention: old traces go (with their spans and scores), by age and by count, in short
transactions that never hold the trace writer back."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from keel.auth.keys import Principal
from keel.store import migrate
from keel.store.db import Database
from keel.tracing.convert import Converted, convert
from keel.tracing.metrics import GatewayMetrics
from keel.tracing.model import RequestTrace
from keel.tracing.recorder import TraceRecorder
from keel.tracing.retention import Policy, Retention
from keel.tracing.spill import SpillFile
from keel.tracing.store import TraceStore

PRINCIPAL = Principal("key1", "default", "app")
DAY_US = 86_400 * 1_000_000
NOW_US = 1_796_000_000 * 1_000_000  # a fixed "now", in microseconds
BOTH_STORES = pytest.mark.parametrize(
    "database_url", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
    indirect=True,
)  # fmt: skip


def traces_at(*starts_us: int) -> list[Converted]:
    """One trace per start time, with an id as the server makes them (time first)."""
    done: list[Converted] = []
    for start_us in starts_us:
        trace_id = f"{start_us // 1000:012x}{os.urandom(10).hex()}"
        trace = RequestTrace(lambda t: done.append(convert(t, True)), trace_id,
                             "chat/completions", PRINCIPAL, {"model": "m", "messages": []},
                             start_ns=start_us * 1000)  # fmt: skip
        trace.finish()
    return done


@pytest.fixture
def store(database_url: str) -> TraceStore:
    database = Database(database_url)
    migrate.upgrade(database)
    return TraceStore(database)


def days_ago(*days: float) -> list[int]:
    return [NOW_US - int(d * DAY_US) for d in days]


def retention(store: TraceStore, policy: Policy, counted: list[tuple[str, int]]) -> Retention:
    return Retention([(store, policy)], chunk=7, pause_s=0,
                     counted=lambda _, reason, n: counted.append((reason, n)),
                     clock=lambda: NOW_US / 1e6)  # fmt: skip


@BOTH_STORES
async def test_traces_older_than_the_retention_go_with_their_spans_and_scores(
    store: TraceStore,
) -> None:
    old = traces_at(*days_ago(*(31 + n / 100 for n in range(20))))
    kept = traces_at(*days_ago(29, 1, 0.01))
    store.write(old + kept)
    for record in (old[0], kept[0]):
        store.add_score("default", record.trace["trace_id"], {"name": "thumbs", "kind": "boolean",
                        "flag": True, "number": 1.0, "label": None, "comment": None,
                        "source": "api", "author": "key:k"})  # fmt: skip
    assert store.count_before(NOW_US - 30 * DAY_US) == 20
    counted: list[tuple[str, int]] = []
    deleted = await retention(store, Policy(max_age_s=30 * 86400), counted).sweep()
    assert deleted == {"traces": 20}
    assert store.count() == 3
    assert sum(n for _, n in counted) == 20
    assert {reason for reason, _ in counted} == {"age"}
    assert len(counted) == 3  # in chunks of 7: 7 + 7 + 6
    assert store.get("default", old[0].trace["trace_id"]) is None
    survivor = store.get("default", kept[0].trace["trace_id"])
    assert survivor is not None
    assert survivor["spans"]
    assert len(survivor["scores"]) == 1
    with store.database.engine.connect() as connection:
        spans = connection.execute(text("SELECT count(*) FROM trace_spans")).scalar_one()
        scores = connection.execute(text("SELECT count(*) FROM trace_scores")).scalar_one()
    assert (spans, scores) == (3, 1)  # nothing left behind of the deleted traces


@BOTH_STORES
async def test_past_the_row_cap_the_oldest_traces_go(store: TraceStore) -> None:
    store.write(traces_at(*days_ago(*(n / 10 for n in range(50)))))
    counted: list[tuple[str, int]] = []
    await retention(store, Policy(max_rows=12), counted).sweep()
    assert store.count() == 12
    assert sum(n for _, n in counted) == 38
    assert {reason for reason, _ in counted} == {"rows"}
    assert store.count_before(NOW_US - int(1.2 * DAY_US)) == 0  # the 12 newest stayed
    counted.clear()
    await retention(store, Policy(max_rows=12), counted).sweep()
    assert not counted  # nothing more to do


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_sweep_never_holds_the_trace_writer_back(tmp_path: Path, store: TraceStore) -> None:
    # SQLite has one writer at a time: deletes in short transactions let the trace
    # writer's batches through between them, so nothing is spilled while retention runs.
    store.write(traces_at(*days_ago(*(40 + n / 1000 for n in range(3000)))))
    metrics = GatewayMetrics(dict, lambda: 0, lambda: 0)
    recorder = TraceRecorder(store.write, lambda t: convert(t, True),
                             SpillFile(tmp_path / "spill", 10**9), metrics,
                             batch_size=50, flush_interval=0.005)  # fmt: skip
    recorder.start()
    sweep = Retention([(store, Policy(max_age_s=30 * 86400))], chunk=100, pause_s=0.001)
    sweeping = asyncio.create_task(sweep.sweep())
    written = 0
    while not sweeping.done():
        for _ in range(50):
            start_ns = time.time_ns()
            trace_id = f"{start_ns // 1_000_000:012x}{os.urandom(10).hex()}"
            RequestTrace(recorder.submit, trace_id, "chat/completions", PRINCIPAL,
                         {"model": "m", "messages": []}, start_ns=start_ns).finish()  # fmt: skip
        written += 50
        await asyncio.sleep(0.005)
    assert (await sweeping) == {"traces": 3000}
    await recorder.close()
    assert written > 0
    assert recorder.spill.spilled == 0
    assert not recorder.store_down
    assert store.count() == written
