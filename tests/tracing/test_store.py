"""Batch inserts of the trace store: whole batches of any size, and rows of older Keels."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.auth.keys import Principal
from keel.store import migrate
from keel.store.db import Database
from keel.tracing.convert import Converted, convert
from keel.tracing.model import RequestTrace
from keel.tracing.store import TraceStore

PRINCIPAL = Principal("key1", "default", "app")


@pytest.fixture
def store(tmp_path: Path) -> TraceStore:
    database = Database(f"sqlite:///{tmp_path / 'keel.db'}")
    migrate.upgrade(database)
    return TraceStore(database)


def records(start: int, count: int) -> list[Converted]:
    done: list[Converted] = []
    for number in range(start, start + count):
        trace = RequestTrace(lambda t: done.append(convert(t, True)), f"{number:032x}",
                             "chat/completions", PRINCIPAL, {"model": "m", "messages": []},
                             start_ns=number + 1)  # fmt: skip
        trace.finish()
    return done


def test_batches_of_any_size_are_written_whole(store: TraceStore) -> None:
    written = 0
    for size in (1, 3, 37, 300, 1000):  # the store splits them into statements of its own
        store.write(records(written, size))
        written += size
    assert store.count() == written
    found = store.get("default", f"{written - 1:032x}")
    assert found is not None
    assert found["spans"][0]["name"] == "chat m"


def test_a_row_spilled_before_newer_columns_existed_is_written(store: TraceStore) -> None:
    (old,) = records(0, 1)
    for column in ("guard_policy", "guard_action", "cache", "saved_cost", "saved_ms"):
        del old.trace[column]
    store.write([old, *records(1, 2)])
    found = store.get("default", f"{0:032x}")
    assert found is not None
    assert (found["guard_action"], found["cache"]) == (None, None)
    assert store.count() == 3


def test_batch_sizes_share_a_few_statements(store: TraceStore) -> None:
    # Every statement size stays prepared in each connection's cache: few sizes, bounded
    # memory, however the batches come.
    written = 0
    for size in range(1, 200, 7):
        store.write(records(written, size))
        written += size
    assert store.count() == written
    assert len(store._insert_traces._sql) <= 7
    assert len(store._insert_spans._sql) <= 7
