from __future__ import annotations

from typing import Any

from keel.cache.config import CacheConfig, directive_from_headers
from keel.cache.keys import bucket_key, cacheable, exact_key, normalise, semantic_key
from tests.cache.conftest import body


def test_delivery_and_bookkeeping_fields_do_not_change_the_key() -> None:
    plain = body("Capital of France?")
    streamed = {**plain, "stream": True, "stream_options": {"include_usage": True},
                "user": "u-42", "metadata": {"team": "a"}}  # fmt: skip
    assert exact_key("p1", "chat@1", plain) == exact_key("p1", "chat@1", streamed)


def test_text_parts_and_plain_strings_are_the_same_request() -> None:
    parts = body("x")
    parts["messages"][1]["content"] = [{"type": "text", "text": "Capital of "},
                                       {"type": "text", "text": "France?"}]  # fmt: skip
    assert normalise(parts) == normalise(body("Capital of France?"))


def test_everything_that_shapes_the_answer_changes_the_key() -> None:
    base = exact_key("p1", "chat@1", body("Capital of France?"))
    assert exact_key("p2", "chat@1", body("Capital of France?")) != base  # another project
    assert exact_key("p1", "chat@2", body("Capital of France?")) != base  # another revision
    assert exact_key("p1", "chat@1", body("Capital of Spain?")) != base
    assert exact_key("p1", "chat@1", body("Capital of France?", max_tokens=5)) != base
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert exact_key("p1", "chat@1", body("Capital of France?", tools=tools)) != base
    fmt = {"type": "json_object"}
    assert exact_key("p1", "chat@1", body("Capital of France?", response_format=fmt)) != base


def test_key_does_not_depend_on_field_order() -> None:
    one = {"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "hi"}]}
    two = {"messages": [{"content": "hi", "role": "user"}], "temperature": 0, "model": "m"}
    assert exact_key("p", "r", one) == exact_key("p", "r", two)


def test_only_deterministic_requests_are_cacheable_by_default() -> None:
    config = CacheConfig()
    assert cacheable(body("x"), config)  # temperature 0
    assert cacheable({**body("x"), "temperature": 0.7, "seed": 3}, config)
    assert not cacheable({**body("x"), "temperature": 0.7}, config)
    assert not cacheable({k: v for k, v in body("x").items() if k != "temperature"}, config)
    assert cacheable({**body("x"), "temperature": 0.7}, CacheConfig(cacheable="always"))
    assert not cacheable(body("x"), CacheConfig(cacheable="never"))
    assert not cacheable(body("x"), CacheConfig(enabled=False))


def _context(project: str, request: dict[str, Any]) -> str:
    key = semantic_key(project, "chat@1", request)
    assert key is not None
    return key.context


def test_semantic_key_splits_context_from_the_last_user_turn() -> None:
    key = semantic_key("p1", "chat@1", body("What is the capital of France?"))
    assert key is not None
    assert key.text == "What is the capital of France?"
    assert _context("p1", body("Which city is France's capital?")) == key.context
    other_system = body("What is the capital of France?")
    other_system["messages"][0]["content"] = "Answer in French."
    assert _context("p1", other_system) != key.context
    assert _context("p1", body("What is the capital of France?", max_tokens=3)) != key.context
    assert _context("p2", body("What is the capital of France?")) != key.context
    assert bucket_key(key.context, "minilm") != bucket_key(key.context, "minilm-v2")


def test_no_semantic_key_without_a_last_user_turn_of_text() -> None:
    tool_turn = body("x")
    tool_turn["messages"].append({"role": "tool", "tool_call_id": "1", "content": "42"})
    assert semantic_key("p", "r", tool_turn) is None
    assert semantic_key("p", "r", body("   ")) is None


def test_directives_from_headers() -> None:
    assert directive_from_headers({}) == "normal"
    assert directive_from_headers({"Cache-Control": "no-cache"}) == "refresh"
    assert directive_from_headers({"cache-control": "max-age=0, no-store"}) == "bypass"
    assert directive_from_headers({"X-Keel-Cache": "bypass"}) == "bypass"
    assert directive_from_headers({"x-keel-cache": "Refresh"}) == "refresh"
    # X-Keel-Cache is the more specific ask and wins.
    assert directive_from_headers({"X-Keel-Cache": "refresh", "Cache-Control": "no-store"}) == (
        "refresh"
    )
    assert directive_from_headers({"X-Keel-Cache": "nonsense"}) == "normal"
