"""The cache on the request path: hits skip the upstream, streamed or not, per tenant, and
never serve one request's private values to another."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI

from keel.server.app import create_app
from keel.server.services import Services, stop_services
from tests.support.app import build_services
from tests.support.http import served
from tests.support.upstream import FakeUpstream

Client = tuple[httpx.AsyncClient, str, Services]


async def _client(tmp_path: Path, upstream: FakeUpstream, **settings: Any) -> AsyncIterator[Client]:
    services, key = build_services(tmp_path, upstream.base_url, **settings)
    app = create_app(services.settings, services=services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://keel") as client:
        yield client, key, services
    await stop_services(services)


@pytest.fixture
async def keel(tmp_path: Path, upstream: FakeUpstream) -> AsyncIterator[Client]:
    async for client in _client(tmp_path, upstream):
        yield client


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": "fake-model", "temperature": 0,
            "messages": [{"role": "user", "content": content}], **extra}  # fmt: skip


async def ask(client: Client, body: dict[str, Any], key: str | None = None, **headers: str) -> Any:
    http, admin, services = client
    response = await http.post(
        "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key or admin}", **headers},
    )
    assert services.gateway.cache is not None
    await services.gateway.cache.drain()  # the store runs after the answer went out
    return response


async def test_a_repeated_deterministic_request_is_an_exact_hit(
    keel: Client, upstream: FakeUpstream
) -> None:
    first = await ask(keel, chat("What is Keel?"))
    second = await ask(keel, chat("What is Keel?"))
    assert first.headers["x-keel-cache"] == "miss"
    assert second.headers["x-keel-cache"] == "hit-exact"
    assert len(upstream.requests) == 1
    assert second.json()["choices"] == first.json()["choices"]
    assert second.json()["model"] == "fake-model"
    http, key, services = keel
    await services.tracing.recorder.flush()
    hits = await http.get("/api/traces", params={"cache": "hit-exact"},
                          headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    [trace] = hits.json()["data"]
    assert trace["trace_id"] == second.headers["x-keel-trace-id"]
    assert trace["saved_ms"] is not None
    assert trace["input_tokens"] is None  # a hit used no tokens
    stats = await http.get("/api/stats", params={"bucket": 0},
                           headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    [row] = stats.json()["data"]
    assert (row["cache_lookups"], row["cache_hits"], row["cache_hit_rate"]) == (2, 1, 0.5)


async def test_sampled_requests_and_bypass_go_upstream(
    keel: Client, upstream: FakeUpstream
) -> None:
    for _ in range(2):
        sampled = await ask(keel, chat("Tell me a story", temperature=0.8))
        assert "x-keel-cache" not in sampled.headers
    await ask(keel, chat("Same question"))
    bypassed = await ask(keel, chat("Same question"), **{"X-Keel-Cache": "bypass"})
    refreshed = await ask(keel, chat("Same question"), **{"Cache-Control": "no-cache"})
    assert "x-keel-cache" not in bypassed.headers
    assert refreshed.headers["x-keel-cache"] == "miss"
    assert len(upstream.requests) == 5


async def test_two_projects_never_share_an_answer(keel: Client, upstream: FakeUpstream) -> None:
    _, _, services = keel
    other = services.keys.ensure_project("other")
    other_key = services.keys.create_key(project_id=other, role="app", name="other app")[1]
    await ask(keel, chat("Shared question"))
    again = await ask(keel, chat("Shared question"), key=other_key)
    assert again.headers["x-keel-cache"] == "miss"
    assert len(upstream.requests) == 2


async def test_a_streamed_miss_is_stored_and_replayed_as_a_stream(
    keel: Client, upstream: FakeUpstream
) -> None:
    _, key, services = keel
    app = create_app(services.settings, services=services)
    async with served(app) as base_url:
        sdk = AsyncOpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)
        texts, states = [], []
        for _ in range(2):
            raw = await sdk.chat.completions.with_raw_response.create(
                model="fake-model", temperature=0, stream=True,
                messages=[{"role": "user", "content": "Stream it"}],
                stream_options={"include_usage": True},
            )  # fmt: skip
            states.append(raw.headers["x-keel-cache"])
            stream = raw.parse()
            chunks = [chunk async for chunk in stream]
            texts.append("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))
            assert chunks[-1].usage is not None
            assert services.gateway.cache is not None
            await services.gateway.cache.drain()
    assert states == ["miss", "hit-exact"]
    assert texts == [upstream.reply, upstream.reply]
    assert len(upstream.requests) == 1


async def test_anonymized_answers_are_cached_without_the_values(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    upstream.echo = True
    async for client in _client(tmp_path, upstream, guard_policy="default"):
        first = await ask(client, chat("Write to ada@example.com please"))
        second = await ask(client, chat("Write to bob@example.org please"))
        assert first.json()["choices"][0]["message"]["content"] == (
            "Write to ada@example.com please"
        )
        # The same question with another address: one entry, each answer with its own value.
        assert second.headers["x-keel-cache"] == "hit-exact"
        assert second.json()["choices"][0]["message"]["content"] == (
            "Write to bob@example.org please"
        )
        assert len(upstream.requests) == 1
