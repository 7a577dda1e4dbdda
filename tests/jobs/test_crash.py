"""kill -9 of a real `keel serve` in the middle of a batch, then a restart: the batch completes,
every line appears exactly once in the output or error file, and the stub upstream was sent
no line twice."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import openai

from tests.jobs.conftest import SlowEcho
from tests.support.keel_process import KeelProcess, start_keel

N = 1500
KILL_AFTER = 300  # lines completed before the kill


def serve(data_dir: Path, stub: SlowEcho) -> KeelProcess:
    upstreams = [{"name": "stub", "base_url": stub.base_url, "models": ["stub-model"]}]
    return start_keel(
        data_dir,
        "--no-local-model",
        "--no-embeddings",
        env={"KEEL_UPSTREAMS": json.dumps(upstreams)},
    )


def batch_file() -> bytes:
    return b"".join(
        json.dumps(
            {
                "custom_id": f"line-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "stub-model",
                    "messages": [{"role": "user", "content": f"line-{i}"}],
                },
            }
        ).encode()
        + b"\n"
        for i in range(N)
    )


def client(keel: KeelProcess) -> openai.OpenAI:
    return openai.OpenAI(api_key=keel.api_key, base_url=f"{keel.base_url}/v1", max_retries=0)


def wait_for(keel: KeelProcess, batch_id: str, done: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = client(keel).batches.retrieve(batch_id)
        if done(batch):
            return batch
        time.sleep(0.05)
    raise AssertionError(f"batch {batch_id} did not get there:\n{keel.log()[-3000:]}")


def test_a_batch_killed_mid_way_completes_after_a_restart_with_no_line_sent_twice(
    tmp_path: Path, stub: SlowEcho
) -> None:
    data_dir = tmp_path / "data"
    first = serve(data_dir, stub)
    try:
        sdk = client(first)
        uploaded = sdk.files.create(file=("lines.jsonl", batch_file()), purpose="batch")
        batch = sdk.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        at_kill = wait_for(first, batch.id, lambda b: b.request_counts.completed >= KILL_AFTER)
    finally:
        first.stop(signal.SIGKILL)
    assert first.process.returncode == -signal.SIGKILL
    assert at_kill.request_counts.completed < N  # killed in the middle
    sent_before_restart = len(stub.requests)

    second = serve(data_dir, stub)
    try:
        done = wait_for(second, batch.id, lambda b: b.status in ("completed", "failed"))
        sdk = client(second)
        output = sdk.files.content(done.output_file_id).text.splitlines()
        errors = (
            sdk.files.content(done.error_file_id).text.splitlines() if done.error_file_id else []
        )
        events = second.api("GET", f"/api/jobs/{batch.id}")["events"]
    finally:
        second.stop()

    assert done.status == "completed"
    results = [json.loads(row) for row in output + errors]
    ids = Counter(result["custom_id"] for result in results)
    assert len(ids) == N  # every line appears ...
    assert set(ids.values()) == {1}  # ... exactly once
    for result in (json.loads(row) for row in output):
        assert result["response"]["body"]["choices"][0]["message"]["content"] == result["custom_id"]
    interrupted = [json.loads(row) for row in errors]
    # Only the lines in flight at the kill end as errors: failed as interrupted, not resent.
    assert {e["error"]["code"] for e in interrupted} <= {"interrupted"}
    assert len(interrupted) <= 32  # the executor's concurrency
    sent = Counter(request["messages"][-1]["content"] for request in stub.requests)
    assert max(sent.values()) == 1  # the stub was sent no line twice
    assert len(output) + len(interrupted) == N
    assert len(stub.requests) <= N
    assert any("resumed by" in event["message"] for event in events)
    print(
        json.dumps(
            {
                "lines": N,
                "completed_at_kill": at_kill.request_counts.completed,
                "stub_calls_before_restart": sent_before_restart,
                "stub_calls_total": len(stub.requests),
                "output_lines": len(output),
                "interrupted_lines": len(interrupted),
                "most_sends_of_one_line": max(sent.values()),
            }
        )
    )
