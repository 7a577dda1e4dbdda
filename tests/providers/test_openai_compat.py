"""Fault injection: every upstream failure becomes a readable 5xx/4xx, never a crash."""

from __future__ import annotations

import json

import httpx
import pytest

from keel.deploy.llamacpp import free_port
from keel.errors import ServiceUnavailable
from keel.providers.openai_compat import OpenAICompatProvider
from tests.support.upstream import FakeUpstream

Gateway = tuple[httpx.AsyncClient, str]
BODY = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("behaviour", "status", "fragment"),
    [
        ("status:500", 502, "answered 500"),
        ("status:401", 502, "answered 401"),
        ("status:400", 400, "injected 400"),
        ("status:429", 503, "answered 429"),
        ("invalid_json", 502, "invalid JSON"),
        ("no_choices", 502, "without 'choices'"),
        ("slow", 504, "did not"),
    ],
)
async def test_upstream_failures_map_to_clear_errors(
    gateway: Gateway, upstream: FakeUpstream, behaviour: str, status: int, fragment: str
) -> None:
    upstream.behaviour = behaviour
    client, key = gateway
    response = await client.post(
        "/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == status
    assert fragment in response.json()["error"]["message"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_are_a_clear_error_sent_upstream_once(
    gateway: Gateway, upstream: FakeUpstream, status: int, stream: bool
) -> None:
    upstream.behaviour = f"status:{status}"
    client, key = gateway
    response = await client.post(
        "/v1/chat/completions",
        json={**BODY, "stream": stream},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "upstream_auth_error"
    assert error["message"].startswith(f"target 'fake-model': upstream 'fake' answered {status}")
    assert "check the API key Keel holds for 'fake'" in error["message"]
    assert len(upstream.requests) == 1  # not retried: the same key would be refused again


async def test_stream_that_fails_before_the_first_byte_gets_a_status(
    gateway: Gateway, upstream: FakeUpstream
) -> None:
    upstream.behaviour = "status:503"
    client, key = gateway
    response = await client.post(
        "/v1/chat/completions",
        json={**BODY, "stream": True},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 503


async def test_stream_that_breaks_midway_ends_with_an_error_event(
    gateway: Gateway, upstream: FakeUpstream
) -> None:
    upstream.behaviour = "stream_break"
    upstream.reply = "one two three four five"
    client, key = gateway
    response = await client.post(
        "/v1/chat/completions",
        json={**BODY, "stream": True},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200
    last = json.loads(response.text.strip().splitlines()[-1].removeprefix("data: "))
    assert last["error"]["type"] == "upstream_error"


async def test_unreachable_upstream_is_503_naming_it() -> None:
    provider = OpenAICompatProvider("ghost", f"http://127.0.0.1:{free_port()}/v1")
    try:
        with pytest.raises(Exception, match=r"'ghost' .* is not reachable") as info:
            await provider.send("chat/completions", BODY)
        assert getattr(info.value, "status", None) == 503
    finally:
        await provider.close()


async def test_429_with_retry_after_tells_how_long_to_wait(upstream: FakeUpstream) -> None:
    upstream.behaviour = "status:429"
    upstream.retry_after = "2"
    provider = OpenAICompatProvider("busy", upstream.base_url)
    try:
        with pytest.raises(ServiceUnavailable, match="answered 429") as info:
            await provider.send("chat/completions", BODY)
        assert info.value.retry_after == 2.0
    finally:
        await provider.close()
