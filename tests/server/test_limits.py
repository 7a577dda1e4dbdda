"""Scopes, rate limits and budgets as a client sees them: statuses, headers, envelopes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, generate_latest

from keel.limits.resilient import ResilientBackend
from keel.providers.openai_compat import OpenAICompatProvider
from keel.routing.table import Target
from keel.server.access import register_metrics
from keel.server.app import create_app
from keel.server.services import Services, stop_services
from tests.support.app import build_services
from tests.support.http import served
from tests.support.upstream import FakeUpstream

Gateway = tuple[httpx.AsyncClient, str]
CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


def services_of(client: httpx.AsyncClient) -> Services:
    services: Services = client._transport.app.state.services  # type: ignore[attr-defined]
    return services


async def make_key(client: httpx.AsyncClient, admin: str, **spec: Any) -> str:
    response = await client.post(
        "/api/keys", json=spec, headers={"Authorization": f"Bearer {admin}"}
    )
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    return key


async def chat(client: httpx.AsyncClient, key: str, **extra: Any) -> httpx.Response:
    return await client.post(
        "/v1/chat/completions", json={**CHAT, **extra}, headers={"Authorization": f"Bearer {key}"}
    )


async def test_requests_per_minute_answer_429_with_openai_headers(gateway: Gateway) -> None:
    client, admin = gateway
    key = await make_key(client, admin, limits={"rpm": 2})
    first, second, third = [await chat(client, key) for _ in range(3)]
    assert (first.status_code, second.status_code, third.status_code) == (200, 200, 429)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    error = third.json()["error"]
    assert error["type"] == "rate_limit_exceeded"
    assert "2 requests per minute" in error["message"]
    assert third.headers["x-ratelimit-limit-requests"] == "2"
    assert third.headers["x-ratelimit-remaining-requests"] == "0"
    assert third.headers["x-ratelimit-reset-requests"].endswith("s")
    assert 1 <= int(third.headers["retry-after"]) <= 60


async def test_tokens_per_minute_are_reconciled_with_real_usage(gateway: Gateway) -> None:
    client, admin = gateway
    key = await make_key(client, admin, limits={"tpm": 100})
    # Each request reserves its prompt (~12) plus max_tokens (50): two reservations would
    # not fit in 100, but the fake upstream reports 12 tokens used, which replaces them.
    first = await chat(client, key, max_tokens=50)
    second = await chat(client, key, max_tokens=50)
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.headers["x-ratelimit-limit-tokens"] == "100"
    used_before_second = 100 - int(second.headers["x-ratelimit-remaining-tokens"])
    assert used_before_second < 100 - 12  # the first request counts 12, not its reservation
    too_big = await chat(client, key, max_tokens=200)
    assert too_big.status_code == 429
    assert "max_tokens" in too_big.json()["error"]["message"]


async def test_streams_count_their_tokens_even_without_include_usage(gateway: Gateway) -> None:
    client, admin = gateway
    key = await make_key(client, admin, limits={"tpm": 100})
    response = await chat(client, key, max_tokens=50, stream=True)
    assert response.status_code == 200
    assert '"usage"' not in response.text  # the client did not ask for usage: none is sent
    after = await chat(client, key, max_tokens=50)
    assert after.status_code == 200
    assert 100 - int(after.headers["x-ratelimit-remaining-tokens"]) < 100 - 12


async def test_concurrency_slots_are_freed_on_success_error_and_disconnect(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    services, admin = build_services(tmp_path, upstream.base_url)
    app = create_app(services.settings, services=services)
    upstream.reply = " ".join(f"w{i}" for i in range(40))
    upstream.chunk_delay = 0.01
    stream_body = {**CHAT, "stream": True}
    try:
        # A real socket: streams must be read while they are open.
        async with served(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
            key = await make_key(client, admin, limits={"concurrency": 1})
            headers = {"Authorization": f"Bearer {key}"}
            async with client.stream("POST", "/v1/chat/completions", json=stream_body,
                                     headers=headers) as stream:  # fmt: skip
                assert stream.status_code == 200
                busy = await chat(client, key)
                assert busy.status_code == 429
                assert "1 requests at once" in busy.json()["error"]["message"]
                await stream.aread()
            assert (await chat(client, key)).status_code == 200  # freed when the stream ended

            upstream.behaviour = "status:400"
            assert (await chat(client, key)).status_code == 400
            upstream.behaviour = "ok"
            assert (await chat(client, key)).status_code == 200  # freed after an error

            async with client.stream("POST", "/v1/chat/completions", json=stream_body,
                                     headers=headers) as stream:  # fmt: skip
                async for _ in stream.aiter_bytes():
                    break  # the client walks away mid-stream
            for _ in range(200):
                response = await chat(client, key)
                if response.status_code != 429:
                    break
                await asyncio.sleep(0.02)
            assert response.status_code == 200  # freed once Keel saw the disconnect
    finally:
        await stop_services(services)


async def test_budgets_warn_at_the_soft_limit_and_refuse_at_the_hard_one(
    gateway: Gateway, upstream: FakeUpstream
) -> None:
    client, admin = gateway
    services = services_of(client)
    provider = OpenAICompatProvider("priced", upstream.base_url, read_timeout=2.0)
    # 12 tokens a request at 100,000 per million: 1.2 per request.
    services.catalog.add_chat(Target("priced-model", provider, "upstream-model",
                                     input_price_per_m=1e5, output_price_per_m=1e5))  # fmt: skip
    key = await make_key(client, admin, limits={"budget": {"amount": 3, "soft": 2}})
    answers = [await chat(client, key, model="priced-model") for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert "x-keel-budget-warning" not in answers[1].headers
    assert "of its budget 3" in answers[2].headers["x-keel-budget-warning"]
    error = answers[3].json()["error"]
    assert error["type"] == "budget_exceeded"
    assert "budget of 3" in error["message"]
    assert int(answers[3].headers["retry-after"]) > 0

    await services.access.usage.flush()
    listed = await client.get(
        "/api/audit",
        params={"action": "budget.warning"},
        headers={"Authorization": f"Bearer {admin}"},
    )
    audit = listed.json()["data"]
    assert len(audit) == 1  # once per period, however many requests pass the soft limit
    assert audit[0]["after"]["soft"] == 2


async def test_route_limits_on_the_project_apply_to_every_key(gateway: Gateway) -> None:
    client, admin = gateway
    response = await client.put(
        "/api/projects/default/limits",
        json={"routes": {"fake-model": {"rpm": 1}}},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert response.status_code == 200, response.text
    one, other = await make_key(client, admin), await make_key(client, admin)
    assert (await chat(client, one)).status_code == 200
    refused = await chat(client, other)
    assert refused.status_code == 429
    assert "route fake-model" in refused.json()["error"]["message"]


async def test_scope_violations_are_403_naming_the_scope(
    gateway: Gateway, upstream: FakeUpstream
) -> None:
    client, admin = gateway
    key = await make_key(client, admin, scopes={"routes": ["other-route"]})
    refused = await chat(client, key)
    assert refused.status_code == 403
    assert "'routes' scope" in refused.json()["error"]["message"]
    assert refused.json()["error"]["param"] == "model"

    capped = await make_key(client, admin, scopes={"max_tokens": 20})
    too_many = await chat(client, capped, max_tokens=21)
    assert too_many.status_code == 403
    assert "'max_tokens' scope" in too_many.json()["error"]["message"]
    assert (await chat(client, capped)).status_code == 200
    assert upstream.requests[-1]["max_tokens"] == 20  # the scope is also the default

    prompts_only = await make_key(client, admin, scopes={"prompts": ["support"]})
    no_prompt = await chat(client, prompts_only)
    assert no_prompt.status_code == 403
    assert "'prompts' scope" in no_prompt.json()["error"]["message"]


async def test_viewers_may_not_call_models(gateway: Gateway) -> None:
    client, admin = gateway
    viewer = await make_key(client, admin, role="viewer")
    response = await chat(client, viewer)
    assert response.status_code == 403
    assert "inference" in response.json()["error"]["message"]


async def test_without_redis_the_gateway_serves_with_local_limits_and_says_so(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    services, _ = build_services(tmp_path, upstream.base_url, redis_url="redis://127.0.0.1:9/0")
    _, key = services.keys.create_key(project_id="default", role="app", name="limited",
                                      limits={"rpm": 1})  # fmt: skip
    app = create_app(services.settings, services=services)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://keel") as client:
            assert (await chat(client, key)).status_code == 200
            assert (await chat(client, key)).status_code == 429  # still limited, locally
            ready = await client.get("/readyz")
            assert ready.status_code == 200
            limits = ready.json()["checks"]["limits"]
            assert "degraded" in limits["state"]
            assert limits["redis_failures"] >= 1
    finally:
        await stop_services(services)


async def test_a_scoped_key_sees_and_embeds_only_its_models(gateway: Gateway) -> None:
    client, admin = gateway
    key = await make_key(client, admin, scopes={"routes": ["fake-model"]})
    headers = {"Authorization": f"Bearer {key}"}
    models = (await client.get("/v1/models", headers=headers)).json()["data"]
    assert [m["id"] for m in models] == ["fake-model"]
    embedded = await client.post(
        "/v1/embeddings", json={"model": "fake-embed", "input": "x"}, headers=headers
    )
    assert embedded.status_code == 403
    assert "'routes' scope" in embedded.json()["error"]["message"]


def test_access_control_counters_are_exported_to_prometheus(tmp_path: Path) -> None:
    services, _ = build_services(
        tmp_path, "http://127.0.0.1:9/v1", redis_url="redis://127.0.0.1:9/0"
    )
    registry = CollectorRegistry()
    register_metrics(services.access, registry)
    assert isinstance(services.access.backend, ResilientBackend)
    services.access.backend.redis_failures = 3
    text = generate_latest(registry).decode()
    assert "keel_limits_redis_failures_total 3.0" in text
    assert "keel_limits_degraded 0.0" in text
