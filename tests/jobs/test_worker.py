"""`keel worker`: a process without the HTTP server runs the batches a `keel serve` (with
run_jobs off) accepted, on the same store (SQLite, and PostgreSQL); SIGTERM stops it cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.jobs.conftest import SlowEcho
from tests.support.keel_process import start_keel
from tests.support.services import temporary_postgres_database

N = 20


def batch_file() -> bytes:
    return b"".join(
        json.dumps(
            {
                "custom_id": f"line-{i}",
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


def wait_for(sdk: openai.OpenAI, batch_id: str, done: Any, log: Path) -> Any:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        batch = sdk.batches.retrieve(batch_id)
        if done(batch):
            return batch
        time.sleep(0.1)
    raise AssertionError(f"batch {batch_id} did not get there:\n{log.read_text()[-3000:]}")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'keel.db'}"
        return
    with temporary_postgres_database() as url:
        yield url


def test_a_worker_runs_the_batches_a_server_accepted(
    tmp_path: Path, stub: SlowEcho, database_url: str
) -> None:
    data_dir = tmp_path / "data"
    upstreams = json.dumps([{"name": "stub", "base_url": stub.base_url, "models": ["stub-model"]}])
    env = {"KEEL_UPSTREAMS": upstreams, "KEEL_RUN_JOBS": "false"}
    store = ("--database-url", database_url)
    keel = start_keel(data_dir, "--no-local-model", "--no-embeddings", *store, env=env)
    worker_log = tmp_path / "worker.log"
    worker = None
    try:
        sdk = openai.OpenAI(api_key=keel.api_key, base_url=f"{keel.base_url}/v1", max_retries=0)
        uploaded = sdk.files.create(file=("lines.jsonl", batch_file()), purpose="batch")
        batch = sdk.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert sdk.batches.retrieve(batch.id).request_counts.completed == 0  # serve runs none

        command = [sys.executable, "-m", "keel", "worker", "--data-dir", str(data_dir),
                   "--no-local-model", "--no-embeddings", *store]  # fmt: skip
        with worker_log.open("wb") as out:
            worker = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "KEEL_CONFIG": "/dev/null", "KEEL_UPSTREAMS": upstreams},
            )
        done = wait_for(sdk, batch.id, lambda b: b.status == "completed", worker_log)
        output = [
            json.loads(row) for row in sdk.files.content(done.output_file_id).text.splitlines()
        ]
        events = keel.api("GET", f"/api/jobs/{batch.id}")["events"]
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait()
        keel.stop()

    assert sorted(row["custom_id"] for row in output) == sorted(f"line-{i}" for i in range(N))
    assert all(row["response"]["body"]["choices"][0]["message"]["content"] == row["custom_id"]
               for row in output)  # fmt: skip
    assert len(stub.requests) == N
    started = next(event for event in events if event["message"] == "started")
    assert started["data"]["worker"].endswith(f":{worker.pid}")  # the worker ran it, not serve
    log = worker_log.read_text()
    assert f"running jobs from the {database_url.split(':')[0]} store" in log
    assert "stopped" in log
