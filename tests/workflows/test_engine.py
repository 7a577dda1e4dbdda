"""Runs over the real store and gateway (a fake upstream, local HTTP tools): every step
kind, checkpoints, resume from the failed step, cancel, and the trace's spans."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from keel.errors import InvalidRequest
from keel.workflows.service import WorkflowFailed
from tests.workflows.conftest import Bench


def pipeline(tools_url: str) -> dict[str, Any]:
    return {
        "name": "pipeline",
        "input": {
            "type": "object",
            "properties": {"docs": {"type": "array"}, "mode": {"type": "string"}},
            "required": ["docs"],
        },
        "steps": [
            {
                "id": "each",
                "map": {
                    "over": "{{ input.docs }}",
                    "concurrency": 3,
                    "steps": [
                        {
                            "id": "ask",
                            "llm": {
                                "model": "fake-model",
                                "messages": [{"role": "user", "content": "summary of {{ item }}"}],
                            },
                        },
                        {
                            "id": "tool",
                            "http": {
                                "url": tools_url + "/echo",
                                "headers": {"Authorization": {"$env": "TOOL_TOKEN"}},
                                "body": {"doc": "{{ item }}", "n": "{{ index }}"},
                            },
                        },
                    ],
                    "output": {
                        "summary": "{{ steps.ask.output.text }}",
                        "n": "{{ steps.tool.output.echo.n }}",
                    },
                },
            },
            {
                "id": "pick",
                "branch": {
                    "cases": [{"if": "input.mode == 'short'", "then": ["short"]}],
                    "else": ["long"],
                },
            },
            {"id": "short", "transform": {"value": "{{ steps.each.output | length }}"}},
            {"id": "long", "transform": {"value": "{{ steps.each.output }}"}},
        ],
        "output": {"short": "{{ steps.short.output }}", "long": "{{ steps.long.output }}"},
    }


async def test_a_workflow_runs_every_kind_of_step_in_order(bench: Bench) -> None:
    bench.define(pipeline(bench.tools.base_url))
    run = await bench.flows.run(
        bench.principal, "workflow", "pipeline", {"docs": ["a", "b", "c"], "mode": "short"}
    )
    assert isinstance(run, dict)
    assert run["status"] == "succeeded"
    assert run["output"] == {"short": 3, "long": None}
    # each tool call carried the secret from the environment and the run's idempotency key
    assert sorted(bench.tools.counts) == sorted(f"{run['id']}:each[{i}].tool" for i in range(3))
    shown = await bench.flows.get("default", run["id"])
    keys = [s["key"] for s in shown["steps"]]
    assert "each[2].ask" in keys
    assert "pick" in keys
    assert "long" not in keys
    long = await bench.flows.run(bench.principal, "workflow", "pipeline", {"docs": ["x"]})
    assert isinstance(long, dict)
    assert long["output"]["long"] == [{"summary": "summary of x", "n": 0}]


async def test_bad_input_is_a_400_and_creates_no_run(bench: Bench) -> None:
    bench.define(pipeline(bench.tools.base_url))
    with pytest.raises(InvalidRequest, match="does not match its JSON Schema at \\(root\\)"):
        await bench.flows.run(bench.principal, "workflow", "pipeline", {"doc": 1})
    assert bench.flows.store.count_runs() == 0


async def test_a_failed_run_resumes_from_the_failed_step_without_repeating_others(
    bench: Bench,
) -> None:
    bench.define(
        {
            "name": "two",
            "steps": [
                {
                    "id": "first",
                    "llm": {
                        "model": "fake-model",
                        "messages": [{"role": "user", "content": "hello"}],
                    },
                },
                {"id": "call", "http": {"url": bench.tools.base_url + "/echo", "body": {"x": 1}}},
            ],
        }
    )
    bench.tools.fail_next = 1  # the tool is down once, and the step has no retries
    with pytest.raises(WorkflowFailed, match=r"step 'call' failed: .* answered 503"):
        await bench.flows.run(bench.principal, "workflow", "two", {})
    [failed] = bench.flows.store.runs("default", "two", 1)
    assert failed["status"] == "failed"
    assert failed["failed_step"] == "call"
    model_calls = len(bench.upstream.requests)
    resumed = await bench.flows.resume(bench.principal, failed["id"], wait=True)
    assert resumed["status"] == "succeeded"
    assert len(bench.upstream.requests) == model_calls  # the llm step was not run again
    assert bench.tools.counts[f"{failed['id']}:call"] == 2  # the same key both times


async def test_an_http_tool_answering_html_fails_the_step_with_a_clear_message(
    bench: Bench,
) -> None:
    bench.define(
        {
            "name": "html",
            "steps": [{"id": "get", "http": {"url": bench.tools.base_url + "/html", "body": {}}}],
        }
    )
    with pytest.raises(WorkflowFailed, match=r"text/html.*not JSON.*must answer JSON") as caught:
        await bench.flows.run(bench.principal, "workflow", "html", {})
    assert caught.value.status == 422


async def test_a_cancelled_run_stops_between_steps(bench: Bench) -> None:
    bench.tools.delay = 1.0  # the tool takes a second to answer
    bench.define(
        {
            "name": "slow",
            "steps": [
                {"id": "wait", "transform": {"value": 1}},
                {"id": "call", "http": {"url": bench.tools.base_url + "/echo", "body": {}}},
                {"id": "after", "transform": {"value": 2}},
            ],
        }
    )
    run = await bench.flows.run(bench.principal, "workflow", "slow", {}, wait=False)
    assert isinstance(run, dict)
    await asyncio.sleep(0.2)
    await bench.flows.cancel(bench.principal, run["id"])
    for _ in range(200):
        if bench.flows.store.run(run["id"])["status"] == "cancelled":  # type: ignore[index]
            break
        await asyncio.sleep(0.05)
    shown = await bench.flows.get("default", run["id"])
    assert shown["status"] == "cancelled"
    assert [s["key"] for s in shown["steps"]] == ["wait", "call"]  # the step under way ended


async def test_a_run_is_one_trace_with_a_span_per_step(bench: Bench) -> None:
    bench.define(
        {
            "name": "traced",
            "steps": [
                {"id": "a", "transform": {"value": "x"}},
                {
                    "id": "b",
                    "llm": {
                        "model": "fake-model",
                        "messages": [{"role": "user", "content": "{{ steps.a.output }}"}],
                    },
                },
            ],
        }
    )
    run = await bench.flows.run(bench.principal, "workflow", "traced", {})
    assert isinstance(run, dict)
    await bench.services.tracing.recorder.flush()
    trace = bench.services.tracing.get("default", run["trace_id"])
    assert trace is not None
    spans = str(trace["spans"])
    assert "'keel.workflow.a'" in spans
    assert "'keel.workflow.b'" in spans
    assert trace["metadata"]["workflow_tokens"] == "12"  # the fake upstream's usage
    assert trace["operation"] == "workflow"
    assert trace["model"] == "workflow:traced"


async def test_a_new_version_reaches_another_replicas_cache_through_the_change_bus(
    bench: Bench,
) -> None:
    from keel.events import LocalChangeBus
    from keel.workflows.service import Workflows

    bus = LocalChangeBus()
    services = bench.services
    replicas = [
        Workflows(services.database, services.gateway, principal_of=services.keys.principal_of,
                  events=bus)
        for _ in range(2)
    ]  # fmt: skip
    one, two = replicas
    one.put("default", "workflow", {"name": "v", "steps": [{"id": "a", "transform": {"value": 1}}]})
    first = await two.run(bench.principal, "workflow", "v", {})
    one.put("default", "workflow", {"name": "v", "steps": [{"id": "a", "transform": {"value": 2}}]})
    second = await two.run(bench.principal, "workflow", "v", {})
    assert isinstance(first, dict)
    assert isinstance(second, dict)
    assert (first["output"], second["output"]) == (1, 2)
    assert second["version"] == 2
    for replica in replicas:
        await replica.close()
