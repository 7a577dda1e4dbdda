"""Relay a streamed last step to the caller while collecting its text for the checkpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import orjson


def delta_text(event: bytes) -> str:
    """The content deltas in one chunk of server-sent events."""
    parts: list[str] = []
    for line in event.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if not data or data == b"[DONE]":
            continue
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        for choice in chunk.get("choices") or ():
            content = (choice.get("delta") or {}).get("content")
            if isinstance(content, str):
                parts.append(content)
    return "".join(parts)


async def relay(
    events: AsyncIterator[bytes], done: Callable[[str | None], Awaitable[None]]
) -> AsyncIterator[bytes]:
    """`events` unchanged; at their end `done(text)`, or `done(None)` when cut short."""
    parts: list[str] = []
    finished = False
    try:
        async for event in events:
            parts.append(delta_text(event))
            yield event
        finished = True
    finally:
        closer = getattr(events, "aclose", None)
        if closer is not None and not finished:
            await closer()
        await done("".join(parts) if finished else None)
