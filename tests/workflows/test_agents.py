"""The agent loop with a scripted model (the fake upstream answers the same JSON each turn):
a repeated call is stopped as a loop, arguments that miss the schema never reach the tool,
and a budget stops a run before a turn could exceed it. The real model: tests/e2e."""

from __future__ import annotations

from typing import Any

from keel.workflows.agents import decision_schema
from keel.workflows.spec import AgentSpec
from tests.workflows.conftest import Bench, priced, spans_of

CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
        "additionalProperties": False}  # fmt: skip


def _agent(bench: Bench, **extra: Any) -> dict[str, Any]:
    spec = {"name": "forecaster", "model": "fake-model", "max_turns": 4,
            "tools": [{"name": "weather", "description": "Temperature in a city.",
                       "parameters": CITY, "http": {"url": bench.tools.base_url + "/weather"}}],
            **extra}  # fmt: skip
    bench.define(spec, "agent")
    return spec


async def _run(bench: Bench, text: str) -> dict[str, Any]:
    run = await bench.flows.run(bench.principal, "agent", "forecaster", {"text": text})
    assert isinstance(run, dict)
    assert run["status"] == "succeeded", run
    output: dict[str, Any] = run["output"]
    output["trace_id"] = run["trace_id"]
    return output


async def test_the_same_call_twice_is_stopped_as_a_loop(bench: Bench) -> None:
    _agent(bench)
    bench.upstream.echo = False
    bench.upstream.reply = '{"tool": "weather", "arguments": {"city": "Oslo"}}'
    output = await _run(bench, "Weather in Oslo?")
    assert output["stopped"] == "loop"
    first, repeat = output["tool_calls"]
    assert first["arguments"] == repeat["arguments"] == {"city": "Oslo"}
    assert repeat["repeated"] is True
    assert output["tool_calls"][0]["result"] == {"city": "Oslo", "temperature_c": 14}
    assert sum(bench.tools.counts.values()) == 1  # the repeat never reached the tool
    # the model was asked for JSON under the grammar of the tools' schemas
    sent = bench.upstream.requests[-1]["response_format"]
    assert sent == {"type": "json_object", "schema": decision_schema(
        AgentSpec.model_validate(_agent(bench)))}  # fmt: skip
    # Each turn is a span with its tokens, each tool call one under its turn.
    await bench.services.tracing.recorder.flush()
    trace = bench.services.tracing.get("default", output["trace_id"])
    assert trace is not None
    spans = spans_of(trace)
    turn = spans["keel.workflow.agent.turn0"]
    assert turn["attributes"]["gen_ai.usage.input_tokens"] == 7
    call = next(c for c in turn["children"] if c["name"] == "keel.workflow.agent.turn0.weather")
    assert call["attributes"]["gen_ai.tool.name"] == "weather"
    assert call["attributes"]["keel.tool.status"] == "ok"
    assert call["attributes"]["keel.input"] == '{"city":"Oslo"}'
    assert call["attributes"]["keel.output"] == '{"city":"Oslo","temperature_c":14}'
    assert "keel.workflow.agent.turn1.weather" not in spans  # the repeat never ran


async def test_arguments_that_miss_the_schema_never_reach_the_tool(bench: Bench) -> None:
    _agent(bench, max_turns=2)
    bench.upstream.echo = False
    bench.upstream.reply = '{"tool": "weather", "arguments": {"town": "Oslo"}}'
    output = await _run(bench, "Weather?")
    assert output["stopped"] == "max_turns"
    assert [c["valid"] for c in output["tool_calls"]] == [False, False]
    assert "arguments do not match" in output["tool_calls"][0]["result"]["error"]
    assert sum(bench.tools.counts.values()) == 0


async def test_an_answer_ends_the_loop_and_a_budget_stops_it_before_a_turn(bench: Bench) -> None:
    _agent(bench)
    bench.upstream.echo = False
    bench.upstream.reply = '{"answer": "It is mild."}'
    output = await _run(bench, "Weather?")
    assert (output["stopped"], output["answer"], output["turns"]) == ("answer", "It is mild.", 1)
    _agent(bench, budget={"tokens": 30}, max_tokens=16)
    output = await _run(bench, "Weather in a city with a very long name, please, " * 3)
    assert output["stopped"] == "budget"
    assert output["tokens"] == 0  # stopped before the first turn: it could not fit


async def test_a_cost_budget_stops_the_run_before_a_turn_could_pass_it(bench: Bench) -> None:
    priced(bench)  # $2 and $8 per million input and output tokens
    bench.upstream.echo = False
    bench.upstream.reply = '{"tool": "weather", "arguments": {"city": "Oslo"}}'
    _agent(bench, model="priced-model", max_tokens=100, budget={"cost_usd": 0.5})
    output = await _run(bench, "Weather in Oslo?")
    assert output["stopped"] == "loop"  # within budget: the loop check ends it
    assert output["cost_usd"] == 2 * (7 * 2.0 + 5 * 8.0) / 1e6  # two turns, priced
    # A turn may answer 100 tokens at $8 per million: $0.0008 could not fit in $0.0005.
    _agent(bench, model="priced-model", max_tokens=100, budget={"cost_usd": 0.0005})
    output = await _run(bench, "Weather in Oslo?")
    assert (output["stopped"], output["turns"], output["cost_usd"]) == ("budget", 0, 0)
    assert "passes the budget of $0.0005" in output["reason"]
    assert sum(bench.tools.counts.values()) == 1  # only the first run reached the tool
