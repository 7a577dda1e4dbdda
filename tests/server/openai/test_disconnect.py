"""A client that leaves mid-answer: the upstream call stops, the trace says 499, limits settle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from keel.deploy.llamacpp import free_port
from keel.providers.openai_compat import OpenAICompatProvider
from keel.routing.table import Target
from keel.server.app import create_app
from keel.server.services import Services, stop_services
from tests.support.app import build_services
from tests.support.http import served
from tests.support.upstream import FakeUpstream

DISCONNECTS = 100
CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "go"}]}


class HeldUpstream:
    """Holds every whole (non-streamed) request until its caller hangs up, and counts both."""

    def __init__(self) -> None:
        self.arrived = 0
        self.hung_up = 0  # requests whose caller closed the connection while held
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def holding(self) -> int:
        return self.arrived - self.hung_up

    async def _chat(self, request: web.Request) -> web.Response:
        await request.read()
        self.arrived += 1
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:  # aiohttp cancels the handler when the caller leaves
            self.hung_up += 1
            raise
        return web.json_response({})  # never reached

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def held() -> AsyncIterator[HeldUpstream]:
    upstream = HeldUpstream()
    await upstream.start()
    yield upstream
    await upstream.stop()


async def until(condition: Callable[[], bool], what: str, deadline: float = 10.0) -> None:
    """Wait for `condition` (checked every few ms); fail naming `what` after `deadline` s."""
    loop = asyncio.get_running_loop()
    ends = loop.time() + deadline
    while not condition():
        if loop.time() > ends:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.005)


async def make_key(session: aiohttp.ClientSession, base: str, admin: str) -> str:
    async with session.post(
        f"{base}/api/keys",
        json={"name": "one-at-a-time", "role": "app", "limits": {"concurrency": 1}},
        headers={"Authorization": f"Bearer {admin}"},
    ) as response:
        assert response.status == 201, await response.text()
        key: str = (await response.json())["key"]
        return key


async def admitted(
    session: aiohttp.ClientSession, base: str, key: str, body: dict[str, Any]
) -> aiohttp.ClientResponse:
    """POST `body`, again while the key's one slot is still held (429): the open response."""
    loop = asyncio.get_running_loop()
    ends = loop.time() + 10
    while True:
        response = await session.post(
            f"{base}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        )
        if response.status != 429 or loop.time() > ends:
            return response
        response.release()
        await asyncio.sleep(0.005)


async def traces_of(
    services: Services, session: aiohttp.ClientSession, base: str, admin: str, user: str
) -> list[dict[str, Any]]:
    await services.tracing.recorder.flush()
    async with session.get(
        f"{base}/api/traces",
        params={"user": user, "limit": "200"},
        headers={"Authorization": f"Bearer {admin}"},
    ) as response:
        assert response.status == 200, await response.text()
        items: list[dict[str, Any]] = (await response.json())["data"]
        return items


Scenario = Callable[[Services, str, str], Awaitable[None]]


async def serving(tmp_path: Path, upstream_url: str, scenario: Scenario) -> None:
    services, admin = build_services(tmp_path, upstream_url)
    app = create_app(services.settings, services=services)
    try:
        async with served(app) as base:
            await scenario(services, base, admin)
    finally:
        await stop_services(services)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_leaving_before_the_first_byte_cancels_the_upstream_call_and_records_499(
    tmp_path: Path, held: HeldUpstream, upstream: FakeUpstream, stream: bool
) -> None:
    async def scenario(services: Services, base: str, admin: str) -> None:
        provider = OpenAICompatProvider("held", held.base_url, read_timeout=60)
        services.catalog.add_chat(Target("held-model", provider, "upstream-model"))
        body = {**CHAT, "model": "held-model", "user": "leaver", "stream": stream}
        async with aiohttp.ClientSession() as session:
            key = await make_key(session, base, admin)
            for _ in range(DISCONNECTS):
                call = asyncio.ensure_future(admitted(session, base, key, body))
                await until(lambda: held.holding == 1, "the request to reach the upstream")
                call.cancel()  # the client hangs up while the upstream is still working
                await until(lambda: held.holding == 0, "Keel to drop the upstream call")
            traces = await traces_of(services, session, base, admin, "leaver")
            # The key's one slot was given back every time: a new request gets through.
            answer = await admitted(session, base, key, {**CHAT, "user": "after"})
            assert answer.status == 200, await answer.text()
        assert held.arrived == held.hung_up == DISCONNECTS
        assert len(traces) == DISCONNECTS
        assert {trace["http_status"] for trace in traces} == {499}

    await serving(tmp_path, upstream.base_url, scenario)


async def test_leaving_mid_stream_always_records_499_and_frees_the_slot(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    upstream.reply = " ".join(f"w{i}" for i in range(200))
    upstream.chunk_delay = 0.02  # 4 s in all, unless Keel lets go of it

    async def scenario(services: Services, base: str, admin: str) -> None:
        body = {**CHAT, "stream": True, "user": "leaver"}
        async with aiohttp.ClientSession() as session:
            key = await make_key(session, base, admin)
            for _ in range(DISCONNECTS):
                response = await admitted(session, base, key, body)
                assert response.status == 200, await response.text()
                assert (await response.content.readline()).startswith(b"data: ")
                response.close()  # the client walks away mid-stream
                await until(
                    lambda: upstream.disconnects == len(upstream.requests),
                    "the upstream stream to be let go",
                )
            traces = await traces_of(services, session, base, admin, "leaver")
            answer = await admitted(session, base, key, {**CHAT, "user": "after"})
            assert answer.status == 200, await answer.text()
        assert len(upstream.requests) == upstream.disconnects + 1 == DISCONNECTS + 1
        assert len(traces) == DISCONNECTS
        assert {trace["http_status"] for trace in traces} == {499}

    await serving(tmp_path, upstream.base_url, scenario)


async def test_client_disconnect_mid_stream_cancels_the_upstream_request(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    upstream.reply = " ".join(f"w{i}" for i in range(200))
    upstream.chunk_delay = 0.05  # 10 s in all, unless Keel lets go of it

    async def scenario(services: Services, base: str, admin: str) -> None:
        body = {**CHAT, "stream": True}
        async with aiohttp.ClientSession() as session:
            response = await session.post(
                f"{base}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {admin}"},
            )
            first = await response.content.readline()
            assert first.startswith(b"data: ")
            response.close()  # the client walks away mid-stream
            await until(lambda: upstream.disconnects == 1, "the upstream to be let go")
        assert len(upstream.requests) == 1

    await serving(tmp_path, upstream.base_url, scenario)
