"""Responses for the hot path: JSON through orjson, and server-sent events."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from fastapi.responses import Response
from starlette.types import Receive, Scope, Send


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


class EventStream(Response):
    """Server-sent events from an async iterator of bytes, sent as they come.

    Starlette's StreamingResponse does the same, but watches for the client leaving with an
    anyio task group per response, which cost about 5 % of Keel's CPU per stream
    (docs/benchmarks.md). Here it is two plain asyncio tasks: one sends, one waits for
    `http.disconnect` and cancels the sender, which closes the events (and so the upstream).
    """

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], headers: Mapping[str, str] | None = None):
        self.events = events
        self.status_code = 200
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sender = asyncio.ensure_future(self._send(send))
        watcher = asyncio.ensure_future(_cancel_on_disconnect(receive, sender))
        try:
            await sender
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the server is stopping, not the client leaving
        finally:
            watcher.cancel()

    async def _send(self, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for chunk in self.events:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()  # a stream cut short finishes its trace and settles now


async def _cancel_on_disconnect(receive: Receive, sender: asyncio.Future[None]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    sender.cancel()
