"""kill -9 of a real `keel serve` in the middle of a map over 100 items: after a restart
the run completes, and neither the stub upstream nor the HTTP tool sees any item again
whose steps had completed before the kill."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.keel_process import KeelProcess, start_keel
from tests.support.tools import ToolProcess

pytestmark = pytest.mark.e2e
ITEMS = 100


@pytest.fixture
def tools(tmp_path: Path) -> Iterator[ToolProcess]:
    process = ToolProcess(tmp_path / "counts.json", delay=0.05).start()
    yield process
    process.stop()


def _workflow(tools_url: str) -> dict[str, object]:
    return {
        "name": "fanout",
        "input": {
            "type": "object",
            "properties": {"items": {"type": "array"}},
            "required": ["items"],
        },
        "steps": [
            {
                "id": "each",
                "map": {
                    "over": "{{ input.items }}",
                    "concurrency": 4,
                    "steps": [
                        {
                            "id": "ask",
                            "llm": {
                                "model": "m",
                                "messages": [{"role": "user", "content": "item {{ item }}"}],
                            },
                        },
                        {
                            "id": "tool",
                            "http": {
                                "url": tools_url + "/echo",
                                "body": {
                                    "item": "{{ item }}",
                                    "said": "{{ steps.ask.output.text }}",
                                },
                            },
                        },
                    ],
                },
            }
        ],
    }


def _done_items(data_dir: Path, run_id: str) -> set[int]:
    """Items whose last step is checkpointed, read from the store as the kill left it."""
    with sqlite3.connect(data_dir / "keel.db") as db:
        rows = db.execute(
            "SELECT key FROM workflow_steps WHERE run_id = ? AND status = 'done' "
            "AND key LIKE 'each[%].tool'",
            (run_id,),
        ).fetchall()
    return {int(key.split("[")[1].split("]")[0]) for (key,) in rows}


def _start(data_dir: Path) -> KeelProcess:
    return start_keel(data_dir, "--no-local-model", "--no-embeddings")


def test_a_killed_run_resumes_and_repeats_no_completed_item(
    tmp_path: Path, tools: ToolProcess
) -> None:
    data_dir = tmp_path / "data"
    keel = _start(data_dir)
    try:
        keel.api(
            "PUT",
            "/api/providers/stub",
            {"kind": "openai_compat", "base_url": tools.base_url + "/v1"},
        )
        keel.api("POST", "/api/models", {"name": "m", "provider": "stub", "upstream_model": "s"})
        keel.api("POST", "/api/workflows", {"spec": _workflow(tools.base_url)})
        run = keel.api(
            "POST",
            "/api/workflows/fanout/runs",
            {"input": {"items": list(range(ITEMS))}, "mode": "async"},
        )
        deadline = time.monotonic() + 60
        while len(_done_items(data_dir, run["id"])) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        keel.stop(signal.SIGKILL)
    except BaseException:
        keel.stop(signal.SIGKILL)
        raise
    done_before = _done_items(data_dir, run["id"])
    assert 20 <= len(done_before) < ITEMS  # killed in the middle of the map
    seen_before = tools.counts()

    keel = _start(data_dir)  # the same data dir: the new process finds the orphaned run
    try:
        deadline = time.monotonic() + 90
        status = ""
        while time.monotonic() < deadline:
            status = keel.api("GET", f"/api/workflow-runs/{run['id']}")["status"]
            if status in ("succeeded", "failed"):
                break
            time.sleep(0.2)
        shown = keel.api("GET", f"/api/workflow-runs/{run['id']}")
    finally:
        keel.stop()
    assert status == "succeeded", shown["error"]
    after = tools.counts()
    repeated_http = [
        i
        for i in done_before
        if after["http"].get(f"{run['id']}:each[{i}].tool", 0)
        != seen_before["http"].get(f"{run['id']}:each[{i}].tool", 0)
    ]
    repeated_model = [
        i
        for i in done_before
        if after["model"].get(f"item {i}") != seen_before["model"].get(f"item {i}")
    ]
    assert repeated_http == []
    assert repeated_model == []
    # every item was served in the end, each of the completed ones exactly once
    assert all(after["http"].get(f"{run['id']}:each[{i}].tool", 0) >= 1 for i in range(ITEMS))
    assert all(after["model"].get(f"item {i}") == 1 for i in done_before)
