"""A run's trace read back through the tracing service: each step's span keeps its input
and output as JSON, an llm step's tokens and cost; with a guard policy that takes PII and
secrets out, the spans (and the run's own input) keep them masked."""

from __future__ import annotations

from typing import Any

from keel.workflows.spans import SpanContent
from tests.workflows.conftest import PRICES, Bench, priced, spans_of

EMAIL = "ada.lovelace@example.com"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
NOTE = f"Write to {EMAIL} with key {AWS_KEY}"


async def traced(bench: Bench, name: str, value: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    run = await bench.flows.run(bench.principal, "workflow", name, value)
    assert isinstance(run, dict)
    assert run["status"] == "succeeded", run
    await bench.services.tracing.recorder.flush()
    trace = bench.services.tracing.get("default", run["trace_id"])
    assert trace is not None
    return trace, spans_of(trace)


async def test_spans_keep_inputs_outputs_tokens_and_cost_and_mask_per_policy(
    bench: Bench,
) -> None:
    priced(bench)
    bench.define(
        {
            "name": "noted",
            "steps": [
                {"id": "tool", "http": {"url": bench.tools.base_url + "/echo",
                                        "body": {"said": "{{ input.note }}"}}},
                {"id": "answer", "llm": {"model": "priced-model", "messages": [
                    {"role": "user", "content": "{{ input.note }}"}]}},
            ],
        }
    )  # fmt: skip
    trace, spans = await traced(bench, "noted", {"note": NOTE})
    tool = spans["keel.workflow.tool"]["attributes"]
    assert tool["keel.workflow.kind"] == "http"
    assert '"said":"Write to' in tool["keel.input"]
    assert EMAIL in tool["keel.input"]
    assert '"echo":{"said":' in tool["keel.output"]
    answer = spans["keel.workflow.answer"]["attributes"]
    assert (answer["gen_ai.usage.input_tokens"], answer["gen_ai.usage.output_tokens"]) == (7, 5)
    assert answer["keel.cost"] == (7 * PRICES[0] + 5 * PRICES[1]) / 1e6
    assert '"role":"user"' in answer["keel.input"]
    assert AWS_KEY in answer["keel.input"]
    assert answer["keel.output"] == f'{{"text":"{NOTE}"}}'  # the fake upstream echoes
    assert float(trace["metadata"]["workflow_cost"]) == answer["keel.cost"]

    # A policy covering workflows that masks PII and redacts secrets: nothing of them is kept.
    guard = bench.services.guard
    assert guard is not None
    # (e-mail addresses only: the name tagger's model would cost this test seconds to load)
    policy = {"input": [{"type": "pii", "action": "anonymize", "options": {"entities": ["EMAIL"]}},
                        {"type": "secrets", "action": "block"}]}  # fmt: skip
    guard.put_policy("default", "no-pii", policy, actor="test")
    guard.attach("default", "route", "workflow", "no-pii", actor="test")
    bench.flows.runtime.guard = guard
    trace, spans = await traced(bench, "noted", {"note": NOTE})
    kept = str([span["attributes"] for span in spans.values()]) + str(trace["input"])
    assert EMAIL not in kept
    assert AWS_KEY not in kept
    assert "<EMAIL>" in spans["keel.workflow.tool"]["attributes"]["keel.input"]
    assert spans["keel.workflow.answer"]["attributes"]["gen_ai.usage.input_tokens"] == 7


def test_a_large_payload_is_cut_with_a_marker_and_without_content_only_hashed() -> None:
    value = {"items": ["x" * 100] * 200}
    shown = SpanContent(limit=1000).shown(value)
    assert len(shown) < 1100
    assert shown.endswith("…[truncated: 20611 characters in all]")
    assert SpanContent().shown({"a": 1}) == '{"a":1}'


def test_a_run_keeps_payloads_up_to_its_budget_then_sizes_only() -> None:
    from keel.auth.keys import Principal
    from keel.tracing.model import RequestTrace
    from keel.workflows.engine import Result, step_attributes

    trace = RequestTrace(lambda _t: None, "t", "workflow", Principal("k", "default", "admin"),
                         {"input": {}}, start_ns=1)  # fmt: skip
    for i in range(4):
        span = trace.begin(f"workflow.each[{i}].a")
        span.attributes = step_attributes("transform", Result("z" * 98))
    SpanContent(run_limit=250).render(trace)
    kept = [s.attributes for s in trace.steps if s.attributes]
    assert [a.get("keel.output") for a in kept[:3]] == ['"' + "z" * 98 + '"'] * 3
    assert kept[3]["keel.output.bytes"] == 100
    assert kept[3]["keel.payload_dropped"] is True
    assert "keel.output" not in kept[3]
    span = trace.begin("workflow.failed_mask")
    span.attributes = step_attributes("transform", Result("secret"))
    SpanContent.drop(trace)  # what a run keeps when its policy's scanner failed
    assert span.attributes == {"keel.workflow.kind": "transform", "keel.payload_dropped": True}
