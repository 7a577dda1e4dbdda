"""Workflows and agents on a real `keel serve` with the bundled SmolLM2: the official openai
SDK with `model: "workflow:NAME"` (streaming and not, one span per step in the trace), and
an agent whose tool calls, decoded under a grammar, all match their tools' schemas."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from openai import OpenAI

from tests.support.keel_process import KeelProcess
from tests.support.tools import ToolProcess

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ToolProcess]:
    process = ToolProcess(tmp_path_factory.mktemp("tools") / "counts.json").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(keel: KeelProcess) -> OpenAI:
    return OpenAI(base_url=f"{keel.base_url}/v1", api_key=keel.api_key, max_retries=0)


@pytest.fixture(scope="module")
def defined(keel: KeelProcess, tools: ToolProcess) -> KeelProcess:
    keel.api(
        "POST",
        "/api/workflows",
        {
            "spec": {
                "name": "answer",
                "input": {
                    "type": "object",
                    "properties": {"question": {"type": "string"}},
                    "required": ["question"],
                },
                "steps": [
                    {"id": "clean", "transform": {"value": "{{ input.question | trim }}"}},
                    {
                        "id": "reply",
                        "llm": {
                            "model": "smollm2",
                            "max_tokens": 16,
                            "temperature": 0,
                            "messages": [{"role": "user", "content": "{{ steps.clean.output }}"}],
                        },
                    },
                ],
            }
        },
    )
    weather = {
        "type": "object",
        "properties": {"city": {"type": "string", "minLength": 2, "maxLength": 30}},
        "required": ["city"],
        "additionalProperties": False,
    }
    convert = {
        "type": "object",
        "properties": {"celsius": {"type": "number"}},
        "required": ["celsius"],
        "additionalProperties": False,
    }
    keel.api(
        "POST",
        "/api/workflows",
        {
            "kind": "agent",
            "spec": {
                "name": "forecaster",
                "model": "smollm2",
                "max_turns": 2,
                "max_tokens": 40,
                "instructions": "You answer weather questions using the tools.",
                "tools": [
                    {
                        "name": "weather",
                        "description": "Current temperature in a city.",
                        "parameters": weather,
                        "http": {"url": tools.base_url + "/weather"},
                    },
                    {
                        "name": "to_fahrenheit",
                        "description": "Convert Celsius to Fahrenheit.",
                        "parameters": convert,
                        "http": {"url": tools.base_url + "/convert"},
                    },
                ],
            },
        },
    )
    return keel


def test_a_workflow_answers_through_the_sdk_whole_and_streamed(
    defined: KeelProcess, client: OpenAI
) -> None:
    messages: Any = [{"role": "user", "content": "  Say hi  "}]
    raw = client.chat.completions.with_raw_response.create(
        model="workflow:answer", messages=messages
    )
    whole = raw.parse()
    assert whole.choices[0].message.content
    trace_id = raw.headers["x-keel-trace-id"]
    chunks = list(
        client.chat.completions.create(model="workflow:answer", messages=messages, stream=True)
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content  # temperature 0: the same words
    assert len(chunks) > 2  # the last llm step streamed token by token
    trace = _wait_trace(defined, trace_id)
    spans = str(trace["spans"])
    assert "'keel.workflow.clean'" in spans
    assert "'keel.workflow.reply'" in spans


def run_agent(keel: KeelProcess, name: str, text: str) -> dict[str, Any]:
    """Run an agent and wait for its end (a small model on a busy CPU may take minutes)."""
    import time

    started = keel.api("POST", f"/api/workflows/{name}/runs?kind=agent",
                       {"input": {"text": text}, "mode": "async"})  # fmt: skip
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        run: dict[str, Any] = keel.api("GET", f"/api/workflow-runs/{started['id']}")
        if run["status"] in ("succeeded", "failed", "cancelled"):
            return run
        time.sleep(0.5)
    raise AssertionError(f"agent run {started['id']} did not end in 10 minutes")


def _wait_trace(keel: KeelProcess, trace_id: str) -> dict[str, Any]:
    import time

    import httpx

    for _ in range(100):
        response = httpx.get(
            f"{keel.base_url}/api/traces/{trace_id}",
            headers={"Authorization": f"Bearer {keel.api_key}"},
        )
        if response.status_code == 200:
            found: dict[str, Any] = response.json()
            return found
        time.sleep(0.1)
    raise AssertionError(f"trace {trace_id} was never stored")


def test_every_tool_call_of_the_agent_matches_its_schema(defined: KeelProcess) -> None:
    questions = ["What is the weather in Paris?", "Convert 21 Celsius to Fahrenheit."]
    calls: list[dict[str, Any]] = []
    for question in questions:
        run = run_agent(defined, "forecaster", question)
        assert run["status"] == "succeeded", run
        calls += run["output"]["tool_calls"]
    assert calls, "the agent made no tool call at all"
    assert [c for c in calls if not c["valid"]] == []


def test_a_planted_loop_is_stopped_and_a_budget_ends_a_run(
    defined: KeelProcess, tools: ToolProcess
) -> None:
    status = {
        "type": "object",
        "properties": {"job": {"type": "string", "enum": ["report"]}},
        "required": ["job"],
        "additionalProperties": False,
    }
    defined.api(
        "POST",
        "/api/workflows",
        {
            "kind": "agent",
            "spec": {
                "name": "poller",
                "model": "smollm2",
                "max_turns": 3,
                "max_tokens": 24,
                "instructions": "Call job_status until the job is done. Never answer before.",
                "tools": [
                    {
                        "name": "job_status",
                        "description": "Status of the job.",
                        "parameters": status,
                        "http": {"url": tools.base_url + "/same"},
                    }
                ],
            },
        },
    )
    run = run_agent(defined, "poller", "Is the report job done?")
    assert run["output"]["stopped"] == "loop", run["output"]
    defined.api(
        "POST",
        "/api/workflows",
        {
            "kind": "agent",
            "spec": {
                "name": "thrifty",
                "model": "smollm2",
                "max_turns": 3,
                "max_tokens": 24,
                "budget": {"tokens": 400},
                "instructions": "Call job_status until the job is done.",
                "tools": [
                    {
                        "name": "job_status",
                        "description": "Status of the job.",
                        "parameters": status,
                        "http": {"url": tools.base_url + "/same"},
                    }
                ],
            },
        },
    )
    run = run_agent(defined, "thrifty", "Is the report job done? " * 20)
    assert run["output"]["stopped"] == "budget", run["output"]
    assert run["output"]["tokens"] <= 400


def test_agent_model_through_the_sdk(defined: KeelProcess, client: OpenAI) -> None:
    answer = client.chat.completions.create(
        model="agent:forecaster", messages=[{"role": "user", "content": "Weather in Lima?"}]
    )
    assert answer.choices[0].message.content
