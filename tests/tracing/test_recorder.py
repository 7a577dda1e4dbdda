"""The batch writer: a slow or dead store never blocks submit(); drops only past the spill cap."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import orjson

from keel.auth.keys import Principal
from keel.tracing.convert import Converted, convert
from keel.tracing.metrics import GatewayMetrics
from keel.tracing.model import RequestTrace
from keel.tracing.recorder import TraceRecorder
from keel.tracing.spill import SpillFile

PRINCIPAL = Principal("key1", "default", "app")


class FlakyStore:
    """A store that can be down (raises) or stuck (blocks) until told otherwise."""

    def __init__(self) -> None:
        self.rows: dict[str, Converted] = {}
        self.down = False
        self.gate = threading.Event()
        self.gate.set()

    def write(self, batch: list[Converted]) -> None:
        self.gate.wait(30)
        if self.down:
            raise ConnectionError("store down")
        for record in batch:
            self.rows.setdefault(record.trace["trace_id"], record)


def recorder_for(store: FlakyStore, spill_dir: Path, **options: int) -> TraceRecorder:
    metrics = GatewayMetrics(dict, lambda: 0, lambda: 0)
    spill = SpillFile(spill_dir, options.pop("spill_bytes", 10**9))
    return TraceRecorder(store.write, lambda t: convert(t, True), spill, metrics,
                         flush_interval=0.01, retry_interval=0.0, **options)  # fmt: skip


def submit(recorder: TraceRecorder, count: int, start: int = 0) -> None:
    for number in range(start, start + count):
        trace = RequestTrace(recorder.submit, f"{number:032x}", "chat/completions", PRINCIPAL,
                             {"model": "m", "messages": []}, start_ns=1)  # fmt: skip
        trace.finish()


def recorder_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("traces-*.jsonl"))


def dropped_metric(recorder: TraceRecorder) -> float:
    value = recorder._metrics.registry.get_sample_value(
        "keel_trace_records_dropped_total", {"reason": "spill_full"}
    )
    return value or 0.0


async def test_records_spilled_while_the_store_is_down_arrive_once_it_is_back(
    tmp_path: Path,
) -> None:
    store = FlakyStore()
    recorder = recorder_for(store, tmp_path)
    store.down = True
    submit(recorder, 300)
    await recorder.flush()
    assert recorder.spill.spilled == 300
    assert not store.rows
    store.down = False
    submit(recorder, 10, start=300)
    await recorder.close()
    assert len(store.rows) == 310
    assert recorder.dropped == 0


async def test_a_stuck_store_does_not_hold_memory_it_spills_instead(tmp_path: Path) -> None:
    store = FlakyStore()
    recorder = recorder_for(store, tmp_path, queue_size=200, batch_size=50)
    store.gate.clear()  # every write blocks
    submit(recorder, 50)
    recorder.start()
    for round_number in range(8):  # more than the queue holds while the first write is stuck
        submit(recorder, 50, start=50 + round_number * 50)
        while recorder.depth() >= 100:  # noqa: ASYNC110 - the writer spills down to half
            await asyncio.sleep(0.01)
    assert recorder.spill.spilled > 0
    store.gate.set()
    await recorder.close()
    assert len(store.rows) == 450
    assert recorder.dropped == 0


async def test_past_the_spill_cap_records_are_dropped_and_counted(tmp_path: Path) -> None:
    store = FlakyStore()
    recorder = recorder_for(store, tmp_path, spill_bytes=20_000)
    store.down = True
    submit(recorder, 200)
    await recorder.close()
    assert 0 < recorder.spill.spilled < 200
    assert recorder.dropped == 200 - recorder.spill.spilled
    assert dropped_metric(recorder) == recorder.dropped


async def test_spill_files_left_by_an_earlier_process_are_replayed_at_start(
    tmp_path: Path,
) -> None:
    store = FlakyStore()
    first = recorder_for(store, tmp_path)
    store.down = True
    submit(first, 25)
    await first.close()  # shut down while the store is away: all 25 are in the spill file
    assert recorder_files(tmp_path)
    store.down = False
    second = recorder_for(store, tmp_path)
    second.start()
    await second.close()
    assert len(store.rows) == 25
    assert not recorder_files(tmp_path)


async def test_an_unreadable_spill_line_is_skipped_and_counted(tmp_path: Path) -> None:
    store = FlakyStore()
    first = recorder_for(store, tmp_path)
    store.down = True
    submit(first, 3)
    await first.close()
    (segment,) = recorder_files(tmp_path)
    with segment.open("ab") as handle:
        handle.write(b"not json\n")
    store.down = False
    second = recorder_for(store, tmp_path)
    second.start()
    await second.close()
    assert len(store.rows) == 3
    assert second.dropped == 1


async def test_stored_traces_leave_the_recent_ids_and_spilled_ones_stay(tmp_path: Path) -> None:
    # The map of recent ids answers for traces not in the store yet; keeping stored ones
    # grew Keel's memory by ~8 MB under any steady load (docs/benchmarks.md, soak).
    store = FlakyStore()
    recorder = recorder_for(store, tmp_path)
    submit(recorder, 100)
    await recorder.flush()
    assert len(store.rows) == 100
    assert recorder.recent(f"{0:032x}") is None
    store.down = True
    submit(recorder, 5, start=100)
    await recorder.flush()
    assert recorder.spill.spilled == 5
    assert recorder.recent(f"{100:032x}") == "default"
    await recorder.close()


class PickyStore(FlakyStore):
    """Rejects, like PostgreSQL a NUL, every batch holding one of the `bad` trace ids."""

    def __init__(self, bad: set[str]) -> None:
        super().__init__()
        self.bad = bad
        self.writes = 0

    def write(self, batch: list[Converted]) -> None:
        self.writes += 1
        rejected = [r.trace["trace_id"] for r in batch if r.trace["trace_id"] in self.bad]
        if rejected and not self.down:
            raise ValueError(f"PostgreSQL text fields cannot contain NUL (0x00) bytes: {rejected}")
        super().write(batch)


def quarantined_lines(directory: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for path in recorder_files(directory / "quarantine")
            for line in path.read_bytes().splitlines()]  # fmt: skip


async def test_a_record_the_store_rejects_is_quarantined_and_the_rest_stored(
    tmp_path: Path,
) -> None:
    bad = {f"{7:032x}", f"{250:032x}"}
    store = PickyStore(bad)
    recorder = recorder_for(store, tmp_path, batch_size=500)
    submit(recorder, 300)
    await recorder.flush()
    submit(recorder, 100, start=300)  # the batch after the poisoned one
    await recorder.flush()
    assert len(store.rows) == 398
    assert not bad & set(store.rows)
    assert store.writes < 40  # halves, not one write per record
    assert recorder.quarantined == 2
    assert not recorder.store_down
    assert recorder.spill.spilled == 0
    lines = quarantined_lines(tmp_path)
    assert sorted(line["trace"]["trace_id"] for line in lines) == sorted(bad)  # type: ignore[index]
    assert all("cannot contain NUL" in str(line["reason"]) for line in lines)
    sample = recorder._metrics.registry.get_sample_value("keel_trace_records_quarantined_total")
    assert sample == 2
    await recorder.close()


async def test_a_spill_file_holding_a_rejected_record_drains_after_a_restart(
    tmp_path: Path,
) -> None:
    bad = {f"{3:032x}"}
    store = PickyStore(bad)
    first = recorder_for(store, tmp_path)
    store.down = True
    submit(first, 20)
    await first.close()  # all 20 spilled, the poisoned one among them
    assert recorder_files(tmp_path)
    store.down = False
    second = recorder_for(store, tmp_path)
    second.start()
    await second.close()
    assert len(store.rows) == 19
    assert second.quarantined == 1
    assert not recorder_files(tmp_path)  # the spill file is gone, not retried forever
    # A quarantined file moved back into the spill directory is replayed like a segment.
    (quarantined,) = recorder_files(tmp_path / "quarantine")
    quarantined.rename(tmp_path / quarantined.name)
    store.bad.clear()
    third = recorder_for(store, tmp_path)
    third.start()
    await third.close()
    assert len(store.rows) == 20


async def test_a_batch_cancelled_mid_convert_at_shutdown_is_spilled_not_lost(
    tmp_path: Path,
) -> None:
    store = FlakyStore()

    def slow_convert(trace: RequestTrace) -> Converted:
        time.sleep(0.002)  # 500 records take a second: close() gives up long before
        return convert(trace, True)

    metrics = GatewayMetrics(dict, lambda: 0, lambda: 0)
    recorder = TraceRecorder(store.write, slow_convert, SpillFile(tmp_path, 10**9), metrics,
                             batch_size=500, flush_interval=0.01, retry_interval=0.0)  # fmt: skip
    submit(recorder, 2000)
    recorder.start()
    await asyncio.sleep(0.05)  # the writer takes the first batch and starts converting it
    await recorder.close(deadline=0.1)
    assert len(store.rows) < 2000  # the writer was cancelled before it was done
    spilled = recorder.spill.spilled
    assert len(store.rows) + spilled == 2000
    assert recorder.dropped == 0
    again = recorder_for(store, tmp_path)
    again.start()
    await again.close()
    assert len(store.rows) == 2000


async def test_spill_and_quarantine_files_past_the_retention_are_deleted_and_counted(
    tmp_path: Path,
) -> None:
    store = PickyStore({f"{1:032x}"})
    recorder = recorder_for(store, tmp_path)
    submit(recorder, 5)
    await recorder.flush()  # one quarantined
    store.down = True
    submit(recorder, 10, start=5)
    await recorder.flush()
    recorder.spill.close()  # a closed segment, as a restart leaves it
    recent = time.time() - 3600
    recorder.expire_files(recent)  # both were written just now: kept
    assert recorder_files(tmp_path)
    assert recorder_files(tmp_path / "quarantine")
    old = time.time() - 40 * 86400
    for path in [*recorder_files(tmp_path), *recorder_files(tmp_path / "quarantine")]:
        os.utime(path, (old, old))
    recorder.expire_files(recent)
    assert not recorder_files(tmp_path)
    assert not recorder_files(tmp_path / "quarantine")
    registry = recorder._metrics.registry
    assert (
        registry.get_sample_value("keel_trace_records_dropped_total", {"reason": "expired"}) == 10
    )
    assert (
        registry.get_sample_value(
            "keel_trace_records_dropped_total", {"reason": "quarantine_expired"}
        )
        == 1
    )
    await recorder.close()
