"""No trace is lost: under load, across a store outage (spill and replay), at shutdown."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from bench.tcp_proxy import TcpProxy
from keel.server.app import create_app
from keel.server.services import Services, stop_services
from keel.store.db import Database
from keel.tracing.store import TraceStore
from tests.support.app import build_services
from tests.support.services import temporary_postgres_database
from tests.support.upstream import FakeUpstream

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "Say hi"}]}


async def send(client: httpx.AsyncClient, key: str, count: int, concurrency: int = 32) -> set[str]:
    """`count` requests (every fourth streamed), `concurrency` at a time; their trace ids."""
    headers = {"Authorization": f"Bearer {key}"}
    ids: set[str] = set()
    slots = asyncio.Semaphore(concurrency)

    async def one(number: int) -> None:
        body = {**CHAT, "stream": number % 4 == 0}
        async with slots:
            response = await client.post("/v1/chat/completions", json=body, headers=headers)
        assert response.status_code == 200, response.text
        ids.add(response.headers["x-keel-trace-id"])

    await asyncio.gather(*(one(n) for n in range(count)))
    return ids


async def wait_until(condition: object, what: str, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        await asyncio.sleep(0.05)


def client_for(services: Services) -> httpx.AsyncClient:
    app = create_app(services.settings, services=services)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://keel")


async def test_every_request_of_a_burst_is_stored_once(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    services, key = build_services(tmp_path, upstream.base_url, read_timeout=30)
    async with client_for(services) as client:
        ids = await send(client, key, 2000)
    recorder = services.tracing.recorder
    await stop_services(services)  # a clean shutdown writes whatever is still queued
    assert len(ids) == 2000
    assert services.tracing.store.count() == 2000
    assert recorder.dropped == 0


async def test_traces_survive_a_postgres_outage_through_the_spill_file(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    with temporary_postgres_database() as url:
        proxy = TcpProxy("127.0.0.1", 5432)
        await proxy.start()
        via_proxy = url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        # In a thread: the migrations go through the proxy, which runs on this loop.
        services, key = await asyncio.to_thread(
            build_services, tmp_path, upstream.base_url, read_timeout=30, database_url=via_proxy
        )
        recorder = services.tracing.recorder
        try:
            async with client_for(services) as client:
                ids = await send(client, key, 400)
                await wait_until(lambda: recorder.written >= 400, "the first requests stored")

                await proxy.cut()  # PostgreSQL is unreachable from here on
                ids |= await send(client, key, 800)
                await wait_until(lambda: recorder.spill.spilled > 0, "records spilled")
                assert recorder.store_down

                await proxy.restore()
                ids |= await send(client, key, 400)
                await wait_until(lambda: not recorder.spill.pending(), "the spill replayed")
        finally:
            await stop_services(services)
            await proxy.stop()
        database = Database(url)
        try:
            stored = TraceStore(database).count()
        finally:
            database.dispose()
    assert len(ids) == 1600
    assert stored == 1600
    assert recorder.spill.spilled > 0
    assert recorder.spill.replayed == recorder.spill.spilled
    assert recorder.dropped == 0
    assert not list((tmp_path / "spill").glob("*.jsonl"))
