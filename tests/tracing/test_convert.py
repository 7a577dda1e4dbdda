"""A finished trace becomes one row and a tree of spans with GenAI attributes."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from keel.auth.keys import Principal
from keel.errors import UpstreamError
from keel.providers.base import Usage
from keel.routing.router import Outcome
from keel.routing.table import Target
from keel.tracing.convert import Converted, convert
from keel.tracing.model import RequestTrace

PRINCIPAL = Principal("key1", "default", "app")
BODY = {"model": "chat-default", "messages": [{"role": "user", "content": "Say hi"}],
        "temperature": 0.2, "user": "ada"}  # fmt: skip
CHOICES = [{"message": {"content": "Hello"}, "finish_reason": "stop"}]


class Provider:
    name = "fake"


FIRST = Target("first@1", Provider(), "model-a")  # type: ignore[arg-type]
SECOND = Target("second@1", Provider(), "model-b", input_price_per_m=1.0)  # type: ignore[arg-type]


def retried(keep_content: bool) -> Converted:
    """A chat request whose first target fails and whose fallback answers."""
    done: list[Converted] = []
    trace = RequestTrace(lambda t: done.append(convert(t, keep_content)), "ab" * 16,
                         "chat/completions", PRINCIPAL, BODY, start_ns=1_000, auth=(1_000, 2_000),
                         metadata={"feature": "faq"})  # fmt: skip
    route = trace.begin("route")
    trace.end(trace.begin("attempt", parent="route", target=FIRST), UpstreamError("down"))
    trace.end(trace.begin("attempt", parent="route", target=SECOND))
    trace.routed(route, Outcome(None, "chat-default", SECOND, 2))
    trace.answered(Usage(7, 2), "model-b-2025", CHOICES)
    trace.finish()
    return done[0]


def spans_of(record: Converted) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in orjson.loads(record.spans)}


def test_a_retried_request_has_an_error_span_and_an_answering_span() -> None:
    record = retried(keep_content=True)
    spans = spans_of(record)
    assert list(spans) == ["chat chat-default", "keel.auth", "keel.route", "chat model-a",
                           "chat model-b"]  # fmt: skip
    root, route = spans["chat chat-default"], spans["keel.route"]
    assert root["attributes"] == {
        "gen_ai.operation.name": "chat", "keel.project": "default", "keel.key_id": "key1",
        "keel.status": "ok", "http.response.status_code": 200,
        "gen_ai.request.model": "chat-default", "gen_ai.response.model": "model-b-2025",
        "gen_ai.provider.name": "fake", "gen_ai.request.temperature": 0.2,
        "gen_ai.usage.input_tokens": 7, "gen_ai.usage.output_tokens": 2,
        "gen_ai.response.finish_reasons": ["stop"], "keel.route": "chat-default",
        "keel.target": "second@1", "keel.attempts": 2, "keel.user": "ada",
        "keel.metadata.feature": "faq", "keel.cost": 7e-06, "keel.stream": False,
    }  # fmt: skip
    assert route["attributes"] == {"keel.step": "route", "keel.route": "chat-default",
                                   "keel.target": "second@1", "keel.attempts": 2}  # fmt: skip
    failed, answered = spans["chat model-a"], spans["chat model-b"]
    assert failed["parent_id"] == answered["parent_id"] == route["span_id"]
    assert spans["keel.auth"]["parent_id"] == root["span_id"]
    assert (failed["status"], failed["kind"]) == ("error", "client")
    assert failed["attributes"] == {
        "keel.step": "attempt", "gen_ai.operation.name": "chat", "gen_ai.provider.name": "fake",
        "gen_ai.request.model": "model-a", "keel.target": "first@1", "keel.attempt": 1,
        "error.type": "upstream_error",
    }  # fmt: skip
    assert answered["attributes"]["keel.attempt"] == 2
    assert answered["attributes"]["gen_ai.response.model"] == "model-b-2025"
    assert answered["attributes"]["gen_ai.usage.output_tokens"] == 2
    assert len({s["span_id"] for s in spans.values()}) == 5
    assert record.errors == [("first@1", "upstream_error")]
    assert record.trace["output"] == "Hello"
    assert (record.trace["attempts"], record.trace["cost"]) == (2, 7e-06)


def test_without_content_the_row_keeps_sizes_and_hashes_only() -> None:
    row = retried(keep_content=False).trace
    assert (row["input"], row["output"]) == (None, None)
    assert row["output_sha256"] == hashlib.sha256(b"Hello").hexdigest()
    assert row["output_bytes"] == 5
    assert row["input_bytes"] == len(orjson.dumps(BODY["messages"]))
