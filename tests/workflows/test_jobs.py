"""A workflow run as a job over HTTP (`mode: job`): one job item per map item, with the
job's progress; the steps after the map run once every item is done, and no item's call is
made twice; cancelling the run's job stops its map and ends the run cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from keel.jobs.executor import ExecutorOptions
from keel.jobs.system import JobSystem
from keel.server.admin.workflows import workflow_jobs
from keel.server.app import create_app
from keel.server.openai.files import job_system
from keel.server.services import stop_services
from keel.workflows.jobs import WorkflowJobs
from tests.support.app import build_services
from tests.support.tools import ToolServer
from tests.support.upstream import FakeUpstream

Client = tuple[httpx.AsyncClient, dict[str, str], JobSystem, WorkflowJobs]


@pytest.fixture
async def keel(tmp_path: Path, upstream: FakeUpstream) -> AsyncIterator[Client]:
    """An in-process Keel whose job executor runs (the app's lifespan is not run here)."""
    upstream.echo = True
    services, key = build_services(tmp_path, upstream.base_url)
    app = create_app(services.settings, services=services)
    system = job_system(services)
    system.executor.options = ExecutorOptions(
        concurrency=8, heartbeat_seconds=0.05, poll_seconds=0.05
    )
    jobs = workflow_jobs(services)
    await system.start()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://keel") as client:
        yield client, {"Authorization": f"Bearer {key}"}, system, jobs
    await system.stop()
    await stop_services(services)


def _digest(inner: dict[str, Any], concurrency: int = 4) -> dict[str, Any]:
    return {
        "name": "digest",
        "input": {"type": "object", "properties": {"docs": {"type": "array"}}},
        "steps": [
            {"id": "title", "transform": {"value": "{{ input.docs | length }} documents"}},
            {"id": "each", "map": {"over": "{{ input.docs }}", "concurrency": concurrency,
                                   "steps": [{"id": "one", **inner}]}},
            {"id": "count", "transform": {"value": {
                "title": "{{ steps.title.output }}", "done": "{{ steps.each.output | length }}",
                "last": "{{ steps.each.output[-1].text }}"}}},
        ],
    }  # fmt: skip


async def _job_of(client: httpx.AsyncClient, headers: dict[str, str], docs: list[str]) -> Any:
    await client.post("/api/workflows", json={"spec": _DIGEST}, headers=headers)
    started = await client.post(
        "/api/workflows/digest/runs", json={"input": {"docs": docs}, "mode": "job"}, headers=headers
    )
    assert started.status_code == 202, started.text
    return started.json()


async def _final(client: httpx.AsyncClient, headers: dict[str, str], job_id: str) -> Any:
    for _ in range(400):
        job = (await client.get(f"/api/jobs/{job_id}", headers=headers)).json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end: {job}")


_LLM = {"llm": {"model": "fake-model", "messages": [{"role": "user", "content": "{{ item }}"}]}}
_DIGEST = _digest(_LLM)


async def test_a_map_over_20_items_runs_as_a_job_with_progress(
    keel: Client, upstream: FakeUpstream
) -> None:
    client, headers, _, _ = keel
    docs = [f"document {i}" for i in range(20)]
    run = await _job_of(client, headers, docs)
    assert run["status"] == "running"
    job = await _final(client, headers, run["job_id"])
    assert job["state"] == "succeeded", job
    assert job["kind"] == "workflow.run"
    assert (job["progress"]["done"], job["progress"]["total"]) == (20, 20)
    shown = (await client.get(f"/api/workflow-runs/{run['id']}", headers=headers)).json()
    assert shown["status"] == "succeeded", shown
    assert shown["output"] == {"title": "20 documents", "done": 20, "last": "document 19"}
    assert sum(1 for s in shown["steps"] if s["key"].startswith("each[")) == 20
    sent = [r["messages"][-1]["content"] for r in upstream.requests]
    assert sorted(sent) == sorted(docs)  # each item's call made once, none again at the end


async def test_cancelling_the_job_stops_the_map_and_ends_the_run_cancelled(
    keel: Client, tools: ToolServer
) -> None:
    client, headers, system, jobs = keel
    tools.delay = 0.1
    inner = {"http": {"url": tools.base_url + "/echo", "body": {"doc": "{{ item }}"}}}
    await client.post("/api/workflows", json={"spec": _digest(inner, 1)}, headers=headers)
    started = await client.post(
        "/api/workflows/digest/runs",
        json={"input": {"docs": [str(i) for i in range(20)]}, "mode": "job"},
        headers=headers,
    )
    run = started.json()
    for _ in range(400):  # until the job runs and its first item is done
        job = (await client.get(f"/api/jobs/{run['job_id']}", headers=headers)).json()
        if job["progress"]["done"]:
            break
        await asyncio.sleep(0.02)
    cancelled = await client.post(f"/api/jobs/{run['job_id']}/cancel", headers=headers)
    assert cancelled.status_code == 200
    job = await _final(client, headers, run["job_id"])
    assert job["state"] == "cancelled"
    assert job["progress"]["done"] < 20
    shown = (await client.get(f"/api/workflow-runs/{run['id']}", headers=headers)).json()
    assert shown["status"] == "cancelled"
    assert sum(tools.counts.values()) < 20
    # A cancel of the run itself cancels its job, here one no worker has taken yet.
    await system.executor.stop()
    queued = await _job_of(client, headers, ["a", "b"])
    cancel = await client.post(f"/api/workflow-runs/{queued['id']}/cancel", headers=headers)
    assert cancel.status_code == 202
    job = (await client.get(f"/api/jobs/{queued['job_id']}", headers=headers)).json()
    assert job["state"] == "cancelled"
    shown = (await client.get(f"/api/workflow-runs/{queued['id']}", headers=headers)).json()
    assert shown["status"] == "cancelled"
    assert shown["steps"][-1]["output"] == {"job_id": queued["job_id"]}
    # Cancelled through /api/jobs before a worker took it, the job never finishes: the
    # maintenance loop's reconcile ends its run as the job ended.
    other = await _job_of(client, headers, ["c"])
    await client.post(f"/api/jobs/{other['job_id']}/cancel", headers=headers)
    assert await jobs.reconcile() == 1
    shown = (await client.get(f"/api/workflow-runs/{other['id']}", headers=headers)).json()
    assert shown["status"] == "cancelled"


async def test_job_mode_needs_a_map_and_a_workflow(keel: Client) -> None:
    client, headers, _, _ = keel
    flat = {"name": "flat", "steps": [{"id": "a", "transform": {"value": 1}}]}
    await client.post("/api/workflows", json={"spec": flat}, headers=headers)
    refused = await client.post("/api/workflows/flat/runs", json={"mode": "job"}, headers=headers)
    assert refused.status_code == 400
    assert "no top-level map step" in refused.json()["error"]["message"]
    agent = await client.post(
        "/api/workflows/flat/runs?kind=agent", json={"mode": "job"}, headers=headers
    )
    assert agent.status_code == 400
    assert "not as a job" in agent.json()["error"]["message"]
