"""The stub upstream the job tests send batch lines to."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from aiohttp import web

from tests.support.upstream import FakeUpstream


class SlowEcho(FakeUpstream):
    """Echoes each line's message after `delay` seconds, so a batch is still running when
    something is killed."""

    delay: float = 0.05

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(self.delay)
        return await super()._chat(request)


@pytest.fixture
def stub() -> Iterator[SlowEcho]:
    """The stub in a thread of its own: it keeps answering while the test waits on Keel."""
    fake = SlowEcho(echo=True)
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(fake.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(30)
    yield fake
    asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(30)
