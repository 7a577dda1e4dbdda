"""Batches on the Ray executor, against a real local Ray cluster started by the test: the
lines run on Ray actors, and an actor killed mid-batch loses no line and sends none twice."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.jobs.conftest import SlowEcho
from tests.support.keel_process import KeelProcess, start_keel
from tests.support.ray_cluster import processes_titled, ray_head

N = 50
KILL_AFTER = 10  # lines completed before an actor is killed


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with ray_head(tmp_path_factory.mktemp("ray") / "head.log") as address:
        yield address


def serve(data_dir: Path, stub: SlowEcho, ray_address: str) -> KeelProcess:
    upstreams = [{"name": "stub", "base_url": stub.base_url, "models": ["stub-model"]}]
    return start_keel(
        data_dir,
        "--no-local-model",
        "--no-embeddings",
        env={
            "KEEL_UPSTREAMS": json.dumps(upstreams),
            "KEEL_RAY_ADDRESS": ray_address,
            "KEEL_JOBS_CONCURRENCY": "4",  # 2 actors, 2 lines each
        },
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


def actor_pids() -> list[int]:
    return processes_titled("ItemCaller")


def wait_for(
    sdk: openai.OpenAI, keel: KeelProcess, batch_id: str, done: Any, timeout: float = 120
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = sdk.batches.retrieve(batch_id)
        if done(batch):
            return batch
        time.sleep(0.05)
    raise AssertionError(f"batch {batch_id} did not get there:\n{keel.log()[-4000:]}")


def test_a_batch_on_ray_loses_no_line_when_an_actor_is_killed(
    tmp_path: Path, stub: SlowEcho, ray_cluster: str
) -> None:
    stub.delay = 0.2
    keel = serve(tmp_path / "data", stub, ray_cluster)
    try:
        sdk = openai.OpenAI(api_key=keel.api_key, base_url=f"{keel.base_url}/v1", max_retries=0)
        uploaded = sdk.files.create(file=("lines.jsonl", batch_file()), purpose="batch")
        batch = sdk.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        at_kill = wait_for(sdk, keel, batch.id, lambda b: b.request_counts.completed >= KILL_AFTER)
        actors = actor_pids()
        assert len(actors) == 2, keel.log()[-3000:]  # the lines really run on Ray's actors
        os.kill(actors[0], signal.SIGKILL)
        done = wait_for(sdk, keel, batch.id, lambda b: b.status in ("completed", "failed"))
        output = sdk.files.content(done.output_file_id).text.splitlines()
        errors = (
            sdk.files.content(done.error_file_id).text.splitlines() if done.error_file_id else []
        )
        restarted = actor_pids()
    finally:
        keel.stop()

    assert at_kill.request_counts.completed < N  # killed in the middle
    assert done.status == "completed"
    results = [json.loads(row) for row in output + errors]
    ids = Counter(result["custom_id"] for result in results)
    assert len(ids) == N
    assert set(ids.values()) == {1}
    for result in (json.loads(row) for row in output):
        assert result["response"]["body"]["choices"][0]["message"]["content"] == result["custom_id"]
    failed = [json.loads(row)["error"] for row in errors]
    # Only lines the killed actor had taken before its death was seen fail, as interrupted,
    # and are not resent: at most the executor's concurrency.
    assert {error["code"] for error in failed} <= {"interrupted"}
    assert len(failed) <= 4
    sent = Counter(request["messages"][-1]["content"] for request in stub.requests)
    assert max(sent.values()) == 1  # the stub was sent no line twice
    assert len(stub.requests) <= N
    assert actors[0] not in restarted
    assert len(restarted) == 2
    print(json.dumps({"lines": N, "completed_at_kill": at_kill.request_counts.completed,
                      "output_lines": len(output), "interrupted_lines": len(failed),
                      "stub_calls": len(stub.requests)}))  # fmt: skip
