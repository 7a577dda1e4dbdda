"""The Anthropic adapter against a local fake of the Messages API: both translations."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI

from keel.deploy.llamacpp import free_port
from keel.errors import (
    InvalidRequest,
    KeelError,
    ServiceUnavailable,
    UpstreamAuthError,
    UpstreamError,
    UpstreamTimeout,
)
from keel.providers.anthropic import AnthropicProvider
from keel.routing.table import Target
from keel.server.app import create_app
from keel.server.services import stop_services
from tests.support.anthropic_fake import FakeAnthropic
from tests.support.app import build_services
from tests.support.http import served

CHAT = "chat/completions"
BODY: dict[str, Any] = {
    "model": "claude-3-5-haiku",
    "messages": [{"role": "user", "content": "hi"}],
}
WEATHER_PARAMS = {"type": "object", "properties": {"city": {"type": "string"}}}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather now in a city.",
        "parameters": WEATHER_PARAMS,
    },
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    server = FakeAnthropic()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def provider(fake: FakeAnthropic) -> AsyncIterator[AnthropicProvider]:
    adapter = AnthropicProvider("claude", fake.base_url, api_key="sk-ant-test", read_timeout=1.0)
    yield adapter
    await adapter.close()


async def collect(provider: AnthropicProvider, payload: dict[str, Any]) -> list[dict[str, Any]]:
    stream = await provider.open_stream(CHAT, payload)
    try:
        return [chunk async for chunk in stream]
    finally:
        await stream.aclose()


async def test_chat_request_becomes_a_messages_api_request(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    payload = {
        "model": "claude-3-5-haiku",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
            {"role": "user", "content": "Hello"},
            {"role": "user", "content": [{"type": "text", "text": "Are you there?"}]},
            {"role": "assistant", "content": "Yes."},
            {"role": "user", "content": "Good."},
        ],
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": "END",
        "seed": 7,  # no Anthropic counterpart: dropped
        "user": "user-42",
    }
    await provider.send(CHAT, payload)
    [request] = fake.requests
    assert request.headers["x-api-key"] == "sk-ant-test"
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["content-type"] == "application/json"
    assert request.body == {
        "model": "claude-3-5-haiku",
        "system": "Be brief.\n\nAnswer in English.",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Hello"},
                    {"type": "text", "text": "Are you there?"},
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "Yes."}]},
            {"role": "user", "content": [{"type": "text", "text": "Good."}]},
        ],
        "max_tokens": 1024,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "user-42"},
    }


async def test_max_tokens_and_stop_list_pass_through(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    await provider.send(CHAT, {**BODY, "max_tokens": 50, "stop": ["a", "b"]})
    assert fake.requests[0].body["max_tokens"] == 50
    assert fake.requests[0].body["stop_sequences"] == ["a", "b"]


async def test_answer_becomes_an_openai_chat_completion(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    result = await provider.send(CHAT, BODY)
    body = result.body
    assert body["id"] == "msg_fake01"
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert body["model"] == "claude-3-5-haiku"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": fake.reply},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert body["usage"] == {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (11, 5)


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length")],
)
async def test_stop_reasons_map_to_finish_reasons(
    fake: FakeAnthropic, provider: AnthropicProvider, stop_reason: str, finish_reason: str
) -> None:
    fake.stop_reason = stop_reason
    result = await provider.send(CHAT, BODY)
    assert result.body["choices"][0]["finish_reason"] == finish_reason
    chunks = await collect(provider, BODY)
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == finish_reason


async def test_tools_and_tool_messages_are_translated(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    arguments = json.dumps({"city": "Paris"})
    payload = {
        **BODY,
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "toolu_9",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_9", "content": "18 C, sunny"},
            {"role": "user", "content": "And tomorrow?"},
        ],
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
    }
    await provider.send(CHAT, payload)
    sent = fake.requests[0].body
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather now in a city.",
            "input_schema": WEATHER_PARAMS,
        }
    ]
    assert sent["tool_choice"] == {
        "type": "tool",
        "name": "get_weather",
        "disable_parallel_tool_use": True,
    }
    assert sent["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_9",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_9", "content": "18 C, sunny"},
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]


@pytest.mark.parametrize(
    ("openai_choice", "anthropic_choice"),
    [("auto", {"type": "auto"}), ("required", {"type": "any"}), ("none", {"type": "none"})],
)
async def test_tool_choice_strings_are_translated(
    fake: FakeAnthropic,
    provider: AnthropicProvider,
    openai_choice: str,
    anthropic_choice: dict[str, str],
) -> None:
    await provider.send(CHAT, {**BODY, "tools": [WEATHER_TOOL], "tool_choice": openai_choice})
    assert fake.requests[0].body["tool_choice"] == anthropic_choice


async def test_tool_use_answer_becomes_tool_calls(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.behaviour = "tool_use"
    result = await provider.send(CHAT, {**BODY, "tools": [WEATHER_TOOL]})
    choice = result.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == fake.reply
    [call] = choice["message"]["tool_calls"]
    assert call["id"] == "toolu_01"
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris", "unit": "C"}


async def test_stream_becomes_openai_chunks_ending_with_usage(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.reply = "one two three four five six"
    chunks = await collect(provider, BODY)
    assert fake.requests[0].body["stream"] is True
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(c["id"] == "msg_fake02" for c in chunks)
    first, *middle, finish, usage = chunks
    assert first["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in [first, *middle])
    assert text == fake.reply
    assert all(c["choices"][0]["finish_reason"] is None for c in [first, *middle])
    assert finish["choices"][0] == {
        "index": 0,
        "delta": {},
        "finish_reason": "stop",
        "logprobs": None,
    }
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 11, "completion_tokens": 6, "total_tokens": 17}


async def test_streamed_tool_calls_assemble_like_openai_ones(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.behaviour = "tool_use"
    chunks = await collect(provider, {**BODY, "tools": [WEATHER_TOOL]})
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    calls = [call for d in deltas for call in d.get("tool_calls", [])]
    assert calls[0]["id"] == "toolu_01"
    assert calls[0]["function"]["name"] == "get_weather"
    assert {call["index"] for call in calls} == {0}
    arguments = "".join(call["function"]["arguments"] for call in calls)
    assert json.loads(arguments) == {"city": "Paris", "unit": "C"}
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"


async def test_text_completions_are_refused_naming_the_endpoint_to_use(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    payload = {"model": "claude-3-5-haiku", "prompt": "Once upon"}
    with pytest.raises(InvalidRequest, match="supports chat completions only") as info:
        await provider.send("completions", payload)
    assert info.value.param == "model"
    with pytest.raises(InvalidRequest, match="chat completions only"):
        await provider.open_stream("completions", payload)
    assert fake.requests == []


@pytest.mark.parametrize(
    ("change", "param", "fragment"),
    [
        ({"temperature": 1.5}, "temperature", "between 0 and 1"),
        ({"response_format": {"type": "json_object"}}, "response_format", "not supported"),
        ({"logprobs": True}, "logprobs", "not supported"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages",
            "'image_url'",
        ),
        ({"messages": [{"role": "system", "content": "only a system prompt"}]}, "messages", "at"),
        ({"tools": [{"type": "retrieval"}]}, "tools", "only type 'function'"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages", "no tool_call_id"),
    ],
)
async def test_requests_anthropic_cannot_serve_are_refused_before_sending(
    fake: FakeAnthropic,
    provider: AnthropicProvider,
    change: dict[str, Any],
    param: str,
    fragment: str,
) -> None:
    with pytest.raises(InvalidRequest, match=fragment) as info:
        await provider.send(CHAT, {**BODY, **change})
    assert info.value.param == param
    assert fake.requests == []


@pytest.mark.parametrize(
    ("status", "error", "fragment"),
    [
        (400, InvalidRequest, "injected 400"),
        (401, UpstreamAuthError, "check the API key"),
        (403, UpstreamAuthError, "check the API key"),
        (404, UpstreamError, "answered 404"),
        (429, ServiceUnavailable, "answered 429"),
        (503, ServiceUnavailable, "answered 503"),
        (529, ServiceUnavailable, "overloaded_error"),
        (500, UpstreamError, "answered 500"),
    ],
)
async def test_status_errors_map_like_other_upstreams(
    fake: FakeAnthropic,
    provider: AnthropicProvider,
    status: int,
    error: type[KeelError],
    fragment: str,
) -> None:
    fake.behaviour = f"status:{status}"
    with pytest.raises(error, match=fragment) as info:
        await provider.send(CHAT, BODY)
    assert type(info.value) is error
    with pytest.raises(error):
        await provider.open_stream(CHAT, {**BODY, "stream": True})


async def test_retry_after_in_seconds_or_as_a_date_is_passed_on(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.behaviour = "status:429"
    fake.retry_after = "3"
    with pytest.raises(ServiceUnavailable) as info:
        await provider.send(CHAT, BODY)
    assert info.value.retry_after == 3.0
    fake.behaviour = "status:529"
    fake.retry_after = formatdate(time.time() + 20, usegmt=True)
    with pytest.raises(ServiceUnavailable) as info:
        await provider.send(CHAT, BODY)
    assert info.value.retry_after is not None
    assert 15 <= info.value.retry_after <= 20


async def test_unreachable_upstream_is_503_naming_it() -> None:
    provider = AnthropicProvider("ghost", f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(ServiceUnavailable, match=r"'ghost' .* is not reachable"):
            await provider.send(CHAT, BODY)
    finally:
        await provider.close()


async def test_silent_upstream_times_out(fake: FakeAnthropic) -> None:
    fake.behaviour = "slow"
    provider = AnthropicProvider("claude", fake.base_url, read_timeout=0.2)
    try:
        with pytest.raises(UpstreamTimeout, match="did not answer in time"):
            await provider.send(CHAT, BODY)
    finally:
        await provider.close()


async def test_answer_that_is_not_json_is_an_upstream_error(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.behaviour = "invalid_json"
    with pytest.raises(UpstreamError, match="invalid JSON"):
        await provider.send(CHAT, BODY)


@pytest.mark.parametrize(
    ("behaviour", "fragment"),
    [
        ("stream_error", "failed mid-stream: Overloaded"),
        ("stream_truncated", "before message_stop"),
    ],
)
async def test_stream_that_fails_midway_raises_after_the_text_so_far(
    fake: FakeAnthropic, provider: AnthropicProvider, behaviour: str, fragment: str
) -> None:
    fake.behaviour = behaviour
    fake.reply = "one two three four"
    stream = await provider.open_stream(CHAT, BODY)
    received: list[str] = []

    async def drain() -> None:
        async for chunk in stream:
            received.append(chunk["choices"][0]["delta"].get("content", ""))

    with pytest.raises(UpstreamError, match=fragment):
        await drain()
    await stream.aclose()
    assert "".join(received) == "one two"


async def test_openai_sdk_talks_to_an_anthropic_model_through_the_gateway(
    tmp_path: Path, fake: FakeAnthropic
) -> None:
    services, key = build_services(tmp_path, f"http://127.0.0.1:{free_port()}/v1")
    provider = AnthropicProvider("anthropic", fake.base_url, api_key="sk-ant-test")
    services.catalog.add_chat(Target("claude-test", provider, "claude-3-5-haiku"))
    app = create_app(services.settings, services=services)
    messages: list[Any] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello"},
    ]
    fake.reply = "Hello there from Claude"
    try:
        async with served(app) as base:
            client = AsyncOpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
            answer = await client.chat.completions.create(
                model="claude-test", messages=messages, max_tokens=64
            )
            stream = await client.chat.completions.create(
                model="claude-test",
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in stream]
            await client.close()
    finally:
        await stop_services(services)

    assert answer.model == "claude-test"
    assert answer.choices[0].message.content == "Hello there from Claude"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (11, 4)

    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == "Hello there from Claude"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (11, 4)

    sent = [request.body for request in fake.requests]
    assert [body["model"] for body in sent] == ["claude-3-5-haiku"] * 2
    assert all(body["system"] == "Be brief." for body in sent)
    assert (sent[0]["max_tokens"], sent[1]["max_tokens"]) == (64, 1024)
    assert sent[1]["stream"] is True
