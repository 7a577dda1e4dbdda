from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from openai import AsyncOpenAI

from keel.cache.sse import DONE, CompletionAssembler, assemble_completion, replay_sse
from tests.cache.conftest import answer

LONG = ("Paris is the capital of France. It has been the country's political, economic and "
        "cultural centre for centuries, and it sits on the Seine.")  # fmt: skip
TOOLS = {
    "id": "chatcmpl-t",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "chat",
    "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]}}],
    "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28},
}  # fmt: skip


async def _collect(response: dict[str, Any], include_usage: bool) -> bytes:
    return b"".join([part async for part in replay_sse(response, "my-model", include_usage)])


def _chunks(raw: bytes) -> list[dict[str, Any]]:
    events = [e for e in raw.split(b"\n\n") if e]
    assert all(e.startswith(b"data: ") for e in events)
    assert events[-1] == DONE.strip()
    return [orjson.loads(e[len(b"data: ") :]) for e in events[:-1]]


@pytest.mark.parametrize("include_usage", [True, False])
async def test_replay_parses_with_the_openai_sdk(include_usage: bool) -> None:
    raw = await _collect(answer(LONG), include_usage)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=raw, headers={"content-type": "text/event-stream"})

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    client = AsyncOpenAI(api_key="k", base_url="http://keel/v1", http_client=http)
    stream = await client.chat.completions.create(
        model="my-model", messages=[{"role": "user", "content": "Capital of France?"}],
        stream=True, stream_options={"include_usage": include_usage},
    )  # fmt: skip
    text, finish, usage, models = [], None, None, set()
    async for chunk in stream:
        models.add(chunk.model)
        usage = chunk.usage or usage
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(text) == LONG
    assert finish == "stop"
    assert models == {"my-model"}
    assert (usage is not None) is include_usage
    if usage is not None:
        assert usage.total_tokens == 11
    assert len(text) > 3  # a real stream, several content pieces


async def test_replay_then_assemble_gives_the_answer_back() -> None:
    for original in (answer(LONG), TOOLS):
        chunks = _chunks(await _collect(original, include_usage=True))
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        rebuilt = assemble_completion(chunks)
        assert rebuilt is not None
        assert rebuilt["choices"][0]["message"] == {
            **original["choices"][0]["message"],
            "content": original["choices"][0]["message"]["content"],
        }
        assert rebuilt["usage"] == original["usage"]
        assert rebuilt["model"] == "my-model"


def test_a_stream_cut_short_assembles_to_nothing() -> None:
    assembler = CompletionAssembler()
    assembler.add({"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant"}}]})
    assembler.add({"id": "c", "choices": [{"index": 0, "delta": {"content": "Par"}}]})
    assert assembler.completion() is None
    assembler.add({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    done = assembler.completion()
    assert done is not None
    assert done["choices"][0]["message"]["content"] == "Par"


def test_streamed_tool_call_fragments_are_joined() -> None:
    chunks = [
        {"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [
            {"index": 0, "id": "call_9", "type": "function",
             "function": {"name": "weather", "arguments": '{"ci'}}]}}]},
        {"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": 'ty": "Oslo"}'}}]}}]},
        {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]  # fmt: skip
    done = assemble_completion(chunks)
    assert done is not None
    call = done["choices"][0]["message"]["tool_calls"][0]
    assert call["id"] == "call_9"
    assert call["function"] == {"name": "weather", "arguments": '{"city": "Oslo"}'}
