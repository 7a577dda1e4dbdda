"""A recording reverse proxy for end-to-end tests: what reached the upstream, and its answer.

It forwards every request unchanged to a real OpenAI-compatible server (the bundled
llama.cpp), so answers still come from the real model.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from keel.deploy.llamacpp import free_port

T = TypeVar("T")
_HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}


@dataclass
class RecordingProxy:
    target: str  # base URL of the real server, including /v1
    requests: list[dict[str, Any]] = field(default_factory=list)
    responses: list[Any] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/v1/{tail:.*}", self._forward)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300))
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        if body:
            self.requests.append(json.loads(body))
        url = self.target.removesuffix("/v1") + request.path_qs
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        async with self._session.request(
            request.method, url, data=body or None, headers=headers
        ) as upstream:
            if upstream.content_type == "text/event-stream":
                relay = web.StreamResponse(status=upstream.status)
                relay.content_type = upstream.content_type
                await relay.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await relay.write(chunk)
                await relay.write_eof()
                return relay
            payload = await upstream.read()
            if upstream.content_type == "application/json":
                self.responses.append(json.loads(payload))
            return web.Response(
                body=payload, status=upstream.status, content_type=upstream.content_type
            )


class LoopThread:
    """An event loop on its own thread, for async servers that sync tests keep running."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 300) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()
