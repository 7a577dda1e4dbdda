"""The Ray executor against one real local Ray cluster started for this module: batch lines
run on Ray actors, on SQLite and on PostgreSQL, and an actor killed mid-batch loses no line
and sends none twice; an experiment's items run on the actors too and score exactly as on
the local executor."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from keel.jobs.executor import ExecutorOptions
from keel.providers.openai_compat import OpenAICompatProvider
from keel.routing.table import Target
from keel.server.app import create_app
from keel.server.openai.files import job_system
from keel.server.services import stop_services
from tests.jobs.conftest import SlowEcho
from tests.support.app import build_services
from tests.support.keel_process import KeelProcess, start_keel
from tests.support.ray_cluster import processes_titled, ray_head
from tests.support.services import temporary_postgres_database

N = 50
KILL_AFTER = 10  # lines completed before an actor is killed


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with ray_head(tmp_path_factory.mktemp("ray") / "head.log") as address:
        yield address


def serve(
    data_dir: Path, stub: SlowEcho, ray_address: str, database_url: str | None = None
) -> KeelProcess:
    upstreams = [{"name": "stub", "base_url": stub.base_url, "models": ["stub-model"]}]
    env = {
        "KEEL_UPSTREAMS": json.dumps(upstreams),
        "KEEL_RAY_ADDRESS": ray_address,
        "KEEL_JOBS_CONCURRENCY": "4",  # 2 actors, 2 items each
    }
    if database_url is not None:
        env["KEEL_DATABASE_URL"] = database_url
    return start_keel(data_dir, "--no-local-model", "--no-embeddings", env=env)


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


# An experiment whose scores differ from item to item: the stub echoes each input.
EXPERIMENT_ITEMS = [
    ("7", "7"), ("42", "41"), ('{"a": 1}', '{"a": 1}'), ("seven", "7"), ("3.14", "3.1"),
    ("[1, 2]", "[1,2]"), ("x7y", "x7y"), ("100", "100"), ("null", "none"), ("Paris", "Paris"),
]  # fmt: skip
EXPERIMENT_SCORERS = [
    {"type": "exact", "name": "accuracy"},
    {"type": "contains", "name": "has_7", "value": "7"},
    {"type": "regex", "name": "digits", "pattern": r"^\d+$"},
    {"type": "json", "name": "json"},
    {"type": "numeric", "name": "close", "tolerance": 0.05},
]


async def experiment_scores(http: httpx.AsyncClient) -> tuple[str, list[Any], dict[str, Any]]:
    """Run the experiment through the API: (run id, per-item outputs and scores, summary)."""
    items = [{"input": given, "expected": expected} for given, expected in EXPERIMENT_ITEMS]
    made = await http.post("/api/datasets", json={"name": "mixed", "items": items})
    assert made.status_code == 201, made.text
    spec = {
        "name": "same-scores",
        "dataset": "mixed",
        "subjects": [{"model": "stub-model", "params": {"temperature": 0}}],
        "scorers": EXPERIMENT_SCORERS,
    }
    started = await http.post("/api/experiments", json=spec)
    assert started.status_code < 300, started.text
    (run,) = started.json()["data"]
    deadline = time.monotonic() + 120
    while run["state"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, run
        await asyncio.sleep(0.05)
        run = (await http.get(f"/api/experiments/{run['id']}")).json()
    assert run["state"] == "succeeded", run
    rows = (await http.get(f"/api/experiments/{run['id']}/items")).json()["data"]
    scored = [(row["outputs"], row["scores"], row["passed"], row["errors"]) for row in rows]
    return run["id"], scored, run["summary"]


async def test_an_experiment_on_ray_scores_exactly_as_on_the_local_executor(
    tmp_path: Path, stub: SlowEcho, ray_cluster: str
) -> None:
    stub.delay = 0.0
    # On PostgreSQL: the lease holder's writes of a Ray job there (the batch test's are on
    # SQLite); one more Keel process rather than the batch test twice, as CI time is short.
    with temporary_postgres_database() as database_url:
        keel = serve(tmp_path / "ray", stub, ray_cluster, database_url)
        try:
            headers = {"Authorization": f"Bearer {keel.api_key}"}
            async with httpx.AsyncClient(base_url=keel.base_url, headers=headers) as http:
                run_id, on_ray, ray_summary = await experiment_scores(http)
                job = (await http.get(f"/api/jobs/{run_id}")).json()
            actors = actor_pids()
        finally:
            keel.stop()
    sent_by_ray = len(stub.requests)

    services, key = build_services(tmp_path / "local", stub.base_url)
    provider = OpenAICompatProvider("stub", stub.base_url, read_timeout=5.0)
    services.catalog.add_chat(Target("stub-model", provider, "stub-model"))
    app = create_app(services.settings, services=services)
    system = job_system(services)
    system.executor.options = ExecutorOptions(
        concurrency=4, heartbeat_seconds=0.05, poll_seconds=0.05
    )
    await system.start()
    try:
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://keel", headers=headers
        ) as http:
            _, local, local_summary = await experiment_scores(http)
        local_kind = type(system.executor.kind_for("experiment")).__name__
    finally:
        await system.stop()
        await stop_services(services)

    # The items really ran on the Ray actors, each call once.
    assert len(actors) == 2
    ran = [e["data"].get("ray_items") for e in job["events"] if e["data"].get("ray_items")]
    assert ran == [len(EXPERIMENT_ITEMS)], job["events"]
    assert sent_by_ray == len(EXPERIMENT_ITEMS)
    assert local_kind == "ExperimentKind"  # ... and the other run in the local executor
    # The same outputs, scores and verdicts, item by item, and the same summary.
    assert on_ray == local
    assert [row[0] for row in on_ray] == [[given] for given, _ in EXPERIMENT_ITEMS]
    assert {m: v["mean"] for m, v in ray_summary["metrics"].items()} == {
        m: v["mean"] for m, v in local_summary["metrics"].items()
    }
    assert ray_summary["pass_rate"] == local_summary["pass_rate"]
    assert 0 < ray_summary["pass_rate"] < 1  # the items do not all score alike
    means = {m: v["mean"] for m, v in ray_summary["metrics"].items()}
    print(json.dumps({"items": len(EXPERIMENT_ITEMS), "ran_on_ray": ran[0],
                      "stub_calls_from_ray": sent_by_ray, "means": means,
                      "same_as_local": on_ray == local}))  # fmt: skip
