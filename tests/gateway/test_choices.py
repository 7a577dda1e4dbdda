"""`n` > 1: one choice per upstream call, merged into the answer the official SDK expects."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from keel.errors import UpstreamError
from keel.gateway.choices import send_choices
from keel.providers.base import Operation, ProviderResponse, Usage
from keel.server.services import Services
from tests.support.upstream import FakeUpstream

Gateway = tuple[httpx.AsyncClient, str]
MESSAGES: list[Any] = [{"role": "user", "content": "Name a colour"}]


@pytest.fixture
async def sdk(gateway: Gateway) -> AsyncOpenAI:
    client, key = gateway
    return AsyncOpenAI(base_url="http://keel/v1", api_key=key, http_client=client, max_retries=0)


def services_of(client: httpx.AsyncClient) -> Services:
    services: Services = client._transport.app.state.services  # type: ignore[attr-defined]
    return services


async def test_n_choices_come_back_indexed_with_their_usage_summed(
    sdk: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    answer = await sdk.chat.completions.create(model="fake-model", messages=MESSAGES, n=3)
    assert [choice.index for choice in answer.choices] == [0, 1, 2]
    assert {choice.message.content for choice in answer.choices} == {upstream.reply}
    assert answer.model == "fake-model"
    assert answer.usage is not None  # the fake reports 7 + 5 tokens per call
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (21, 15)
    assert answer.usage.total_tokens == 36
    # llama.cpp's server ignores n: Keel asked for each choice itself.
    assert len(upstream.requests) == 3
    assert all("n" not in request for request in upstream.requests)


async def test_text_completions_take_n_too(sdk: AsyncOpenAI, upstream: FakeUpstream) -> None:
    answer = await sdk.completions.create(model="fake-model", prompt="Once", n=2, max_tokens=5)
    assert [choice.index for choice in answer.choices] == [0, 1]
    assert [choice.text for choice in answer.choices] == [upstream.reply] * 2


async def test_a_seed_gives_each_choice_its_own_so_they_differ_yet_repeat(
    sdk: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    await sdk.chat.completions.create(model="fake-model", messages=MESSAGES, n=3, seed=40)
    assert sorted(request["seed"] for request in upstream.requests) == [40, 41, 42]


async def test_usage_is_counted_per_call_when_the_upstream_reports_none(
    sdk: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    upstream.report_usage = False
    one = await sdk.chat.completions.create(model="fake-model", messages=MESSAGES)
    three = await sdk.chat.completions.create(model="fake-model", messages=MESSAGES, n=3)
    assert one.usage is not None
    assert three.usage is not None
    # Each call read the prompt once more: three prompts and three answers are counted.
    assert three.usage.prompt_tokens == 3 * one.usage.prompt_tokens
    assert three.usage.completion_tokens == 3 * one.usage.completion_tokens


async def test_n_requests_are_never_answered_from_the_cache(
    gateway: Gateway, sdk: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    client, _ = gateway
    cache = services_of(client).gateway.cache
    assert cache is not None
    # temperature 0 makes a request cacheable: the first answer is kept.
    await sdk.chat.completions.create(model="fake-model", messages=MESSAGES, temperature=0)
    await cache.drain()
    again = await sdk.chat.completions.with_raw_response.create(
        model="fake-model", messages=MESSAGES, temperature=0
    )
    assert again.headers["x-keel-cache"] == "hit-exact"
    for _ in range(2):
        raw = await sdk.chat.completions.with_raw_response.create(
            model="fake-model", messages=MESSAGES, temperature=0, n=2
        )
        await cache.drain()
        assert "x-keel-cache" not in raw.headers
        assert len(raw.parse().choices) == 2
    assert len(upstream.requests) == 1 + 2 + 2  # one cached answer, then every choice asked


async def test_streaming_n_choices_is_refused_with_what_to_send_instead(
    sdk: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await sdk.chat.completions.create(model="fake-model", messages=MESSAGES, n=2, stream=True)
    error = info.value.body
    assert isinstance(error, dict)
    assert error["param"] == "n"
    assert "stream: false" in error["message"]
    assert upstream.requests == []


async def test_more_than_eight_choices_are_refused(
    sdk: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    with pytest.raises(openai.BadRequestError, match="n must be between 1 and 8"):
        await sdk.chat.completions.create(model="fake-model", messages=MESSAGES, n=9)
    assert upstream.requests == []


class Calls:
    """A provider whose calls answer or fail as a test says, and that counts cancellations."""

    name = "calls"

    def __init__(self, failing: int | None = None, supports_n: bool = False):
        self.failing = failing  # the call (0-based) that fails after the others started
        self.supports_n = supports_n
        self.payloads: list[dict[str, Any]] = []
        self.cancelled = 0

    async def send(self, op: Operation, payload: dict[str, Any]) -> ProviderResponse:
        index = len(self.payloads)
        self.payloads.append(payload)
        if index == self.failing:
            raise UpstreamError("upstream 'calls' answered 500")
        try:
            await asyncio.sleep(3600 if self.failing is not None else 0)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        n = payload.get("n", 1)
        choices = [{"index": i, "message": {"content": f"c{i}"}} for i in range(n)]
        return ProviderResponse({"id": "x", "choices": choices}, Usage(3, 2))

    async def count_usage(self, op: Operation, payload: dict[str, Any], text: str) -> Usage:
        raise AssertionError("every call reported its usage")


async def test_one_failed_call_fails_the_attempt_and_stops_the_others() -> None:
    provider = Calls(failing=2)
    with pytest.raises(UpstreamError):
        await send_choices(provider, "chat/completions", {"n": 4})  # type: ignore[arg-type]
    assert len(provider.payloads) == 4
    for _ in range(100):  # the cancelled calls see it on their next turn
        if provider.cancelled == 3:
            break
        await asyncio.sleep(0)
    assert provider.cancelled == 3


async def test_a_provider_that_answers_n_itself_gets_one_call() -> None:
    provider = Calls(supports_n=True)
    answer = await send_choices(provider, "chat/completions", {"n": 3})  # type: ignore[arg-type]
    assert provider.payloads == [{"n": 3}]
    assert [choice["index"] for choice in answer.body["choices"]] == [0, 1, 2]
    assert answer.usage == Usage(3, 2)
