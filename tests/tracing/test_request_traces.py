"""A gateway request leaves one trace with spans for its steps and GenAI attributes."""

from __future__ import annotations

from typing import Any

from keel.providers.openai_compat import OpenAICompatProvider
from keel.routing.table import Target
from tests.support.upstream import FakeUpstream
from tests.tracing.conftest import Gateway, recorded, services_of

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "Say hi"}]}


def spans_by_name(tree: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for node in tree:
        found[node["name"]] = node
        found.update(spans_by_name(node["children"]))
    return found


async def test_a_streamed_answer_has_ttft_and_complete_token_counts(
    gateway: Gateway, upstream: FakeUpstream
) -> None:
    client, key = gateway
    upstream.chunk_delay = 0.01
    headers = {"Authorization": f"Bearer {key}", "X-Keel-Session-Id": "s-1",
               "X-Keel-Metadata-Feature": "greeting"}  # fmt: skip
    response = await client.post(
        "/v1/chat/completions",
        json={**CHAT, "stream": True, "temperature": 0.3, "max_tokens": 20, "user": "ada"},
        headers=headers,
    )
    assert response.status_code == 200
    trace = await recorded(client, key, response.headers["x-keel-trace-id"])

    words = len(upstream.reply.split(" "))
    assert trace["input_tokens"] == 7
    assert trace["output_tokens"] == words
    assert trace["ttft_ms"] is not None
    assert 0 < trace["ttft_ms"] < trace["duration_ms"]
    assert trace["output"] == upstream.reply
    assert trace["status"] == "ok"
    assert (trace["user"], trace["session_id"]) == ("ada", "s-1")
    assert trace["metadata"] == {"feature": "greeting"}

    spans = spans_by_name(trace["spans"])
    root = spans["chat fake-model"]
    attributes = root["attributes"]
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == "fake-model"
    assert attributes["gen_ai.response.model"] == "upstream-model"
    assert attributes["gen_ai.provider.name"] == "fake"
    assert attributes["gen_ai.usage.input_tokens"] == 7
    assert attributes["gen_ai.usage.output_tokens"] == words
    assert attributes["gen_ai.request.temperature"] == 0.3
    assert attributes["gen_ai.request.max_tokens"] == 20
    assert attributes["keel.ttft_ms"] == round(trace["ttft_ms"], 3)
    assert attributes["keel.session_id"] == "s-1"
    assert attributes["keel.metadata.feature"] == "greeting"
    assert {child["name"] for child in root["children"]} >= {"keel.auth", "keel.route"}
    attempt = spans["chat upstream-model"]
    assert attempt["kind"] == "client"
    assert attempt["parent_id"] == spans["keel.route"]["span_id"]
    # The attempt of a stream lasts until the last chunk.
    assert attempt["end_us"] >= spans["keel.route"]["end_us"]


async def test_a_whole_answer_records_cost_from_the_versions_prices(
    gateway: Gateway, upstream: FakeUpstream
) -> None:
    client, key = gateway
    headers = {"Authorization": f"Bearer {key}"}
    catalog = services_of(client).catalog
    provider = OpenAICompatProvider("fake", upstream.base_url)
    catalog.add_chat(Target("priced@1", provider, "upstream-model",
                            input_price_per_m=2.0, output_price_per_m=10.0))  # fmt: skip
    response = await client.post(
        "/v1/chat/completions", json={**CHAT, "model": "priced@1"}, headers=headers
    )
    assert response.status_code == 200, response.text
    trace = await recorded(client, key, response.headers["x-keel-trace-id"])
    assert trace["target"] == "priced@1"
    await provider.close()
    assert trace["cost"] == (7 * 2.0 + 5 * 10.0) / 1_000_000
    assert trace["ttft_ms"] is None  # not streamed
    root = trace["spans"][0]
    assert root["attributes"]["keel.cost"] == trace["cost"]
    assert root["attributes"]["gen_ai.response.finish_reasons"] == ["stop"]


async def test_a_failed_request_is_traced_with_its_error_and_attempts(
    gateway: Gateway, upstream: FakeUpstream
) -> None:
    client, key = gateway
    upstream.behaviour = "status:500"
    response = await client.post(
        "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 502
    trace = await recorded(client, key, response.headers["x-keel-trace-id"])
    assert trace["status"] == "error"
    assert trace["error_type"] == "upstream_error"
    assert trace["http_status"] == 502
    attempts = [s for s in spans_by_name(trace["spans"]).values() if s["kind"] == "client"]
    assert attempts
    assert all(s["status"] == "error" for s in attempts)


async def test_completions_and_embeddings_are_traced(gateway: Gateway) -> None:
    client, key = gateway
    headers = {"Authorization": f"Bearer {key}"}
    text = await client.post("/v1/completions", headers=headers,
                             json={"model": "fake-model", "prompt": "Once"})  # fmt: skip
    vectors = await client.post("/v1/embeddings", headers=headers,
                                json={"model": "fake-embed", "input": ["a b", "c"]})  # fmt: skip
    assert text.status_code == vectors.status_code == 200
    completion = await recorded(client, key, text.headers["x-keel-trace-id"])
    assert completion["operation"] == "text_completion"
    assert completion["input"] == "Once"
    embedding = await recorded(client, key, vectors.headers["x-keel-trace-id"])
    assert embedding["operation"] == "embeddings"
    assert embedding["input_tokens"] == 3
    assert embedding["spans"][0]["attributes"]["gen_ai.response.model"] == "fake-embed"


async def test_with_content_off_only_sizes_and_hashes_are_stored(
    tmp_path: Any, upstream: FakeUpstream
) -> None:
    import hashlib

    import httpx

    from keel.server.app import create_app
    from keel.server.services import stop_services
    from tests.support.app import build_services

    services, key = build_services(tmp_path, upstream.base_url, trace_content=False)
    app = create_app(services.settings, services=services)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://keel"
    ) as client:
        response = await client.post(
            "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}
        )
        trace = await recorded(client, key, response.headers["x-keel-trace-id"])
    await stop_services(services)
    assert trace["input"] is None
    assert trace["output"] is None
    assert trace["output_sha256"] == hashlib.sha256(upstream.reply.encode()).hexdigest()
    assert trace["output_bytes"] == len(upstream.reply)
    assert "Say hi" not in str(trace)
