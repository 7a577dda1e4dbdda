"""Reading an upstream's server-sent events: whatever has arrived, split into events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from keel.errors import UpstreamError
from keel.providers import http as upstream_http
from keel.providers.openai_compat import OpenAICompatProvider
from tests.support.scripted import ScriptedUpstream, event, scripted_upstream

PAYLOAD = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedUpstream]:
    async with scripted_upstream() as fake:
        yield fake


async def _provider(fake: ScriptedUpstream) -> OpenAICompatProvider:
    return OpenAICompatProvider("scripted", fake.base_url)


def _text(chunk: dict[str, Any]) -> str:
    return str(chunk["choices"][0]["delta"]["content"])


async def test_events_that_arrived_together_are_buffered_and_the_next_one_is_not_waited_for(
    scripted: ScriptedUpstream,
) -> None:
    later = asyncio.Event()
    scripted.writes = [event("a") + event("b"), later, event("c") + b"data: [DONE]\n\n"]
    provider = await _provider(scripted)
    try:
        stream = await provider.open_stream("chat/completions", PAYLOAD)
        chunks = stream.__aiter__()
        first = await asyncio.wait_for(chunks.__anext__(), 5)
        # "b" came in the same write: it is on hand, and reading it does not wait.
        assert (_text(first), stream.buffered()) == ("a", True)
        second = await asyncio.wait_for(chunks.__anext__(), 5)
        assert (_text(second), stream.buffered()) == ("b", False)
        later.set()
        rest = [_text(chunk) async for chunk in chunks]
        assert rest == ["c"]
        await stream.aclose()
    finally:
        await provider.close()


async def test_events_split_across_writes_and_line_endings_are_put_back_together(
    scripted: ScriptedUpstream,
) -> None:
    whole = event("split across writes")
    scripted.writes = [
        b": a comment line\n\n" + whole[:15],
        whole[15:],
        event("crlf").replace(b"\n", b"\r\n"),
        b"event: message\ndata: "
        + json.dumps({"choices": [{"delta": {"content": "end"}}]}).encode(),
    ]  # the last event has no newline at all: the end of the body ends it
    provider = await _provider(scripted)
    try:
        stream = await provider.open_stream("chat/completions", PAYLOAD)
        texts = [_text(chunk) async for chunk in stream]
        assert texts == ["split across writes", "crlf", "end"]
    finally:
        await provider.close()


async def test_a_line_without_end_beyond_the_limit_is_an_upstream_error(
    scripted: ScriptedUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upstream_http, "MAX_EVENT_BYTES", 1000)
    scripted.writes = [b"data: " + b"x" * 600, b"y" * 600]
    provider = await _provider(scripted)
    try:
        stream = await provider.open_stream("chat/completions", PAYLOAD)
        with pytest.raises(UpstreamError, match="stream line over 1000 bytes"):
            async for _ in stream:
                pass
    finally:
        await provider.close()
