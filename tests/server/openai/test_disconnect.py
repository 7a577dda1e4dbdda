from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from keel.server.app import create_app
from keel.server.services import stop_services
from tests.support.app import build_services
from tests.support.http import served
from tests.support.upstream import FakeUpstream


async def test_client_disconnect_mid_stream_cancels_the_upstream_request(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    upstream.reply = " ".join(f"w{i}" for i in range(200))
    upstream.chunk_delay = 0.05  # 10 s in all, unless Keel lets go of it
    services, key = build_services(tmp_path, upstream.base_url)
    app = create_app(services.settings, services=services)
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "go"}], "stream": True}
    try:
        async with served(app) as base, aiohttp.ClientSession() as session:
            response = await session.post(
                f"{base}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {key}"},
            )
            first = await response.content.readline()
            assert first.startswith(b"data: ")
            response.close()  # the client walks away mid-stream
            for _ in range(100):
                if upstream.disconnects:
                    break
                await asyncio.sleep(0.05)
        assert upstream.disconnects == 1
        assert len(upstream.requests) == 1
    finally:
        await stop_services(services)
