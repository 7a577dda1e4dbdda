"""The background embedding of traffic: a sample of requests, their last user turn as the
trace keeps it (redacted by the guard), stored with the trace id; a full queue drops and
counts instead of growing."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from keel.auth.keys import Principal
from keel.embeddings.base import EmbeddingResult
from keel.insights.store import InsightStore
from keel.insights.traffic import TrafficEmbedder, last_user_turn
from keel.store import migrate
from keel.store.db import Database
from keel.tracing.model import RequestTrace
from tests.support.app import HashEmbedder


def trace(number: int, text: str, op: str = "chat/completions") -> RequestTrace:
    body = {
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]
    }
    made = RequestTrace(
        lambda _t: None,
        f"{number:032x}",
        op,
        Principal("k", "default", "app"),
        body,
        start_ns=time.time_ns(),
    )
    made.end_ns = made.start_ns + 2_000_000
    return made


def store(tmp_path: Path) -> InsightStore:
    database = Database(f"sqlite:///{tmp_path}/keel.db")
    migrate.upgrade(database)
    return InsightStore(database)


async def test_sampled_requests_are_stored_with_their_trace_id(tmp_path: Path) -> None:
    insights = store(tmp_path)
    draws = iter([0.1, 0.9, 0.2, 0.8])
    traffic = TrafficEmbedder(insights, HashEmbedder, sample_rate=0.5, draw=lambda: next(draws))
    for number in range(4):
        traffic.offer(trace(number, f"my email is <EMAIL_{number}>"))
    traffic.offer(trace(9, "an embedding request", op="embeddings"))  # not a chat: skipped
    await traffic.flush()
    await traffic.close()
    window = insights.window("default", 0, time.time_ns() // 1000 + 1)
    assert window.trace_ids == [f"{0:032x}", f"{2:032x}"]
    assert window.texts == ["my email is <EMAIL_0>", "my email is <EMAIL_2>"]
    assert window.vectors.shape == (2, 8)
    assert window.durations_ms == [2.0, 2.0]


async def test_a_batch_stored_again_is_skipped_and_reads_back_the_same(database_url: str) -> None:
    # The writer inserts straight through the driver, several rows a statement: a retried
    # batch must add nothing, and each value must read back as the model's type.
    database = Database(database_url)
    migrate.upgrade(database)
    insights = InsightStore(database)
    failed = trace(1, "why was I charged twice?")
    failed.error = RuntimeError("upstream down")
    row = {
        "trace_id": failed.trace_id, "project_id": "default", "start_us": 5, "route": "chat",
        "text": "why was I charged twice?", "answer": None, "cost": None, "duration_ms": 2.5,
        "error": True, "vector": np.arange(8, dtype=np.float32).tobytes(),
    }  # fmt: skip
    more = [{**row, "trace_id": f"{n:032x}", "error": False, "cost": 0.5} for n in range(2, 72)]
    assert insights.write([row, *more]) == 71  # more rows than one statement holds
    assert insights.write([row]) == 0
    window = insights.window("default", 0, 10)
    assert len(window) == 71
    first = window.trace_ids.index(failed.trace_id)
    assert window.errors[first] is True
    assert window.costs[first] is None
    assert window.routes[first] == "chat"
    assert window.durations_ms[first] == 2.5
    assert window.vectors.shape == (71, 8)
    assert sorted(set(window.errors)) == [False, True]


async def test_a_batch_the_store_refuses_is_counted_as_dropped(tmp_path: Path) -> None:
    insights = store(tmp_path)
    insights.database.dispose()
    (tmp_path / "keel.db").unlink()  # the table is gone: every write fails
    (tmp_path / "keel.db").mkdir()
    traffic = TrafficEmbedder(insights, HashEmbedder)
    for number in range(3):
        traffic.offer(trace(number, "hello"))
    with pytest.raises(Exception):  # noqa: B017, PT011  # whatever the driver raises
        await traffic.flush()
    await traffic.close()
    assert (traffic.embedded, traffic.dropped) == (0, 3)


async def test_a_full_queue_drops_and_counts(tmp_path: Path) -> None:
    traffic = TrafficEmbedder(store(tmp_path), HashEmbedder, queue_size=10)
    for number in range(15):
        traffic.offer(trace(number, "hello"))
    assert traffic.depth() == 10
    assert traffic.dropped == 5
    await traffic.close()


def test_the_last_user_turn_is_what_is_embedded() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "answer"},
            {"role": "user", "content": [{"type": "text", "text": "second"}]},
        ]
    }
    assert last_user_turn("chat/completions", body) == "second"
    assert last_user_turn("completions", {"prompt": "complete me"}) == "complete me"
    assert last_user_turn("chat/completions", {"messages": []}) is None


class TwoWorkerEmbedder(HashEmbedder):
    """Records which worker each call used: requests' (embed) or background work's."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def embed(self, texts: list[str]) -> EmbeddingResult:
        self.calls.append("request")
        return await super().embed(texts)

    async def embed_background(self, texts: list[str]) -> EmbeddingResult:
        self.calls.append("background")
        return await super().embed(texts)


async def test_traffic_is_embedded_on_the_background_worker(tmp_path: Path) -> None:
    # Where the embedder has a lower-priority worker for background work, traffic goes
    # there, never onto the worker the cache's and RAG's query embeddings wait on.
    model = TwoWorkerEmbedder()
    traffic = TrafficEmbedder(store(tmp_path), lambda: model)
    for number in range(3):
        traffic.offer(trace(number, "hello"))
    await traffic.flush()
    await traffic.close()
    assert model.calls == ["background"]
    assert traffic.embedded == 3
