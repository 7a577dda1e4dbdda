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


async def test_a_keep_alive_connection_the_upstream_closed_is_resent_once_on_a_new_one() -> None:
    """The upstream answers one request per connection and then, holding the connection open
    as keep-alive, closes it when the next request arrives: what a server's idle timer does
    when its close crosses the request. The second call is answered on a new connection."""
    connections = 0
    answer = b'{"ok": true}'

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer)
        )
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")  # the next request on this connection: dropped
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = upstream_http.UpstreamHTTP(
        "flaky",
        f"http://127.0.0.1:{port}/v1",
        {},
        connect_timeout=5,
        read_timeout=5,
        error_message=lambda raw: raw.decode(),
    )
    try:
        for _ in range(3):
            response = await client.post("chat/completions", {"model": "m"})
            assert await client.read_json(response) == {"ok": True}
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
    assert connections == 3  # the first, then one new connection for each dropped request
