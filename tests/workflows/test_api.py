"""/api/workflows and /v1 with model "workflow:NAME" on an in-process Keel: sync and async
runs, resume and cancel over HTTP, and bad input answered with a 4xx that says what to fix."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.support.tools import ToolServer

Gateway = tuple[httpx.AsyncClient, str]


def _spec(tools_url: str) -> dict[str, Any]:
    return {
        "name": "greet",
        "input": {
            "type": "object",
            "properties": {"name": {"type": "string"}},
            "required": ["name"],
            "additionalProperties": False,
        },
        "steps": [
            {"id": "hello", "transform": {"value": "Hello {{ input.name }}"}},
            {"id": "tool", "http": {"url": tools_url + "/echo",
                                    "body": {"said": "{{ steps.hello.output }}"}}},
            {"id": "answer", "llm": {"model": "fake-model", "messages": [
                {"role": "user", "content": "{{ steps.tool.output.echo.said }}"}]}},
        ],
    }  # fmt: skip


async def _define(client: httpx.AsyncClient, key: str, spec: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    created = await client.post("/api/workflows", json={"spec": spec}, headers=headers)
    assert created.status_code == 201, created.text
    same = await client.post("/api/workflows", json={"spec": spec}, headers=headers)
    assert same.status_code == 200  # the same spec again: no new version
    assert same.json()["version"] == 1


async def test_a_run_over_http_sync_and_async(gateway: Gateway, tools: ToolServer) -> None:
    client, key = gateway
    headers = {"Authorization": f"Bearer {key}"}
    await _define(client, key, _spec(tools.base_url))
    sync = await client.post(
        "/api/workflows/greet/runs", json={"input": {"name": "Ada"}}, headers=headers
    )
    assert sync.status_code == 200, sync.text
    assert sync.json()["status"] == "succeeded"
    assert sync.json()["output"] == {"text": "Hello from the fake upstream."}
    started = await client.post(
        "/api/workflows/greet/runs",
        json={"input": {"name": "Bo"}, "mode": "async"},
        headers=headers,
    )
    assert started.status_code == 202
    run_id = started.json()["id"]
    for _ in range(100):
        shown = (await client.get(f"/api/workflow-runs/{run_id}", headers=headers)).json()
        if shown["status"] == "succeeded":
            break
        await asyncio.sleep(0.05)
    assert [s["key"] for s in shown["steps"]] == ["hello", "tool", "answer"]
    assert shown["steps"][1]["output"]["echo"] == {"said": "Hello Bo"}
    listed = (await client.get("/api/workflows/greet/runs", headers=headers)).json()
    assert {r["id"] for r in listed["data"]} == {sync.json()["id"], run_id}


async def test_bad_input_and_unknown_names_are_4xx_that_say_what_to_fix(
    gateway: Gateway, tools: ToolServer
) -> None:
    client, key = gateway
    headers = {"Authorization": f"Bearer {key}"}
    await _define(client, key, _spec(tools.base_url))
    bad = await client.post(
        "/api/workflows/greet/runs", json={"input": {"nom": "x"}}, headers=headers
    )
    assert bad.status_code == 400
    assert "does not match its JSON Schema" in bad.json()["error"]["message"]
    missing = await client.post("/api/workflows/nope/runs", json={}, headers=headers)
    assert missing.status_code == 404
    assert "unknown workflow 'nope' (known: greet)" in missing.json()["error"]["message"]
    chat = await client.post(
        "/v1/chat/completions",
        json={"model": "workflow:nope", "messages": [{"role": "user", "content": "hi"}]},
        headers=headers,
    )
    assert chat.status_code == 404
    runs = (await client.get("/api/workflow-runs", headers=headers)).json()
    assert runs["data"] == []  # nothing was started by bad input


async def test_a_failed_run_is_a_422_and_resumes_from_the_failed_step(
    gateway: Gateway, tools: ToolServer
) -> None:
    client, key = gateway
    headers = {"Authorization": f"Bearer {key}"}
    spec = _spec(tools.base_url)
    spec["steps"][1]["http"]["url"] = tools.base_url + "/html"
    await _define(client, key, spec)
    failed = await client.post(
        "/api/workflows/greet/runs", json={"input": {"name": "Cy"}}, headers=headers
    )
    assert failed.status_code == 422
    message = failed.json()["error"]["message"]
    assert "step 'tool' failed" in message
    assert "not JSON" in message
    run_id = message.split("/api/workflow-runs/")[1].split("/")[0]
    resumed = await client.post(
        f"/api/workflow-runs/{run_id}/resume", json={"mode": "sync"}, headers=headers
    )
    assert resumed.status_code == 422  # still HTML: still failing at the same step
    shown = (await client.get(f"/api/workflow-runs/{run_id}", headers=headers)).json()
    assert shown["failed_step"] == "tool"
    assert [s["key"] for s in shown["steps"] if s["status"] == "done"] == ["hello"]
    assert tools.counts[f"{run_id}:tool"] == 2
    done = await client.post(f"/api/workflow-runs/{run_id}/cancel", headers=headers)
    assert done.status_code == 400  # a failed run is over already


async def test_workflow_model_through_v1_chat(gateway: Gateway, tools: ToolServer) -> None:
    client, key = gateway
    headers = {"Authorization": f"Bearer {key}"}
    await _define(client, key, _spec(tools.base_url))
    body = {"model": "workflow:greet", "messages": [{"role": "user", "content": "Di"}]}
    whole = await client.post("/v1/chat/completions", json=body, headers=headers)
    assert whole.status_code == 200, whole.text
    assert whole.json()["choices"][0]["message"]["content"] == "Hello from the fake upstream."
    assert whole.headers["x-keel-workflow-run"].startswith("wfr_")
    streamed = await client.post(
        "/v1/chat/completions", json={**body, "stream": True}, headers=headers
    )
    assert streamed.status_code == 200
    events = [line for line in streamed.text.splitlines() if line.startswith("data: {")]
    assert len(events) > 2  # the last llm step's own chunks, relayed as they came
    assert streamed.text.rstrip().endswith("data: [DONE]")
