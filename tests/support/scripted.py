"""An upstream that writes exactly the bytes a test scripts, in the writes it scripts.

So what arrives at Keel together, and what is still to come, are under the test's control.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from keel.deploy.llamacpp import free_port


def event(text: str) -> bytes:
    """One SSE chat chunk carrying `text`."""
    chunk = {"id": "c", "choices": [{"index": 0, "delta": {"content": text}}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


class ScriptedUpstream:
    """Sends each item of `writes` as one write; an asyncio.Event item is waited for first."""

    def __init__(self) -> None:
        self.writes: list[bytes | asyncio.Event] = []
        self.port = free_port()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for item in self.writes:
            if isinstance(item, asyncio.Event):
                await item.wait()
            else:
                await response.write(item)
        return response


@asynccontextmanager
async def scripted_upstream() -> AsyncIterator[ScriptedUpstream]:
    fake = ScriptedUpstream()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake._chat)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", fake.port).start()
    try:
        yield fake
    finally:
        await runner.cleanup()
