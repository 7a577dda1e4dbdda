from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import redis

from bench.tcp_proxy import TcpProxy
from keel.limits.base import Check, Settlement
from keel.limits.memory import MemoryBackend
from keel.limits.redis import RedisBackend, connect
from keel.limits.resilient import ResilientBackend
from keel.server.access import start_access
from keel.server.app import create_app
from keel.server.services import stop_services
from tests.support.app import build_services
from tests.support.redis import temporary_redis_prefix
from tests.support.upstream import FakeUpstream


@pytest.fixture
async def backends() -> AsyncIterator[tuple[RedisBackend, RedisBackend]]:
    """Two backends (as two replicas would have) over one real Redis and one prefix. What
    these tests prove is the scripts' counting, not Redis's speed: the timeouts are long
    enough that a machine busy with other work (a burst of 64 connects beside the type
    checker on 2 cores) does not read as an outage."""
    with temporary_redis_prefix() as (url, prefix):
        a = RedisBackend(connect(url, timeout_s=10), prefix)
        b = RedisBackend(connect(url, timeout_s=10), prefix)
        yield a, b
        await a.close()
        await b.close()


async def test_two_replicas_admit_exactly_the_limit_together(
    backends: tuple[RedisBackend, RedisBackend],
) -> None:
    a, b = backends
    rpm = [Check("requests", "rpm:key:k", 60, 1, "key k")]
    decisions = await asyncio.gather(*(
        (a if i % 2 else b).acquire(rpm, "") for i in range(200)
    ))  # fmt: skip
    assert sum(d.failed is None for d in decisions) == 60
    refused = [d for d in decisions if d.failed is not None]
    assert all(0 < d.states[0].reset_s <= 60 for d in refused)


async def test_tokens_are_reserved_then_reconciled_in_redis(
    backends: tuple[RedisBackend, RedisBackend],
) -> None:
    a, b = backends
    tpm = [Check("tokens", "tpm:key:k", 1000, 600, "key k")]
    first = await a.acquire(tpm, "")
    assert first.failed is None
    assert (await b.acquire(tpm, "")).failed == 0
    await a.settle(Settlement(first.bucket, token_keys=("tpm:key:k",), token_delta=12 - 600))
    again = await b.acquire(tpm, "")
    assert again.failed is None
    assert again.states[0].used == 12


async def test_concurrency_leases_and_spend_are_shared(
    backends: tuple[RedisBackend, RedisBackend],
) -> None:
    a, b = backends
    slot = [Check("concurrency", "cc:project:p", 1, 1, "project p")]
    held = await a.acquire(slot, "lease-1")
    assert held.failed is None
    assert (await b.acquire(slot, "lease-2")).failed == 0
    await a.settle(Settlement(held.bucket, lease_keys=("cc:project:p",), lease="lease-1"))
    assert (await b.acquire(slot, "lease-2")).failed is None

    budget = [Check("budget", "project:p:m2026-12", 2.0, 0, "project p", reset_s=100)]
    await a.settle(Settlement(0, spend_keys=("project:p:m2026-12",), spend=1.5, spend_ttl_s=60))
    await b.settle(Settlement(0, spend_keys=("project:p:m2026-12",), spend=0.5, spend_ttl_s=60))
    assert await a.spent("project:p:m2026-12") == pytest.approx(2.0)
    assert (await b.acquire(budget, "")).failed == 0
    assert await a.first_warning("project:p:m2026-12", 60)
    assert not await b.first_warning("project:p:m2026-12", 60)  # once across replicas


async def test_an_unreachable_redis_falls_back_to_local_limits() -> None:
    dead = RedisBackend(connect("redis://127.0.0.1:9/0"), "keel-test-dead")
    clock = [0.0]
    backend = ResilientBackend(dead, MemoryBackend(), retry_s=5, clock=lambda: clock[0])
    rpm = [Check("requests", "rpm:key:k", 2, 1, "key k")]
    decisions = [await backend.acquire(rpm, "") for _ in range(3)]
    assert [d.failed for d in decisions] == [None, None, 0]  # still enforced, in-process
    assert backend.degraded
    assert backend.redis_failures == 1  # it waits before trying Redis again
    status = backend.status()
    assert status["ready"] is True
    assert "degraded" in status["state"]
    clock[0] += 6
    await backend.acquire(rpm, "")
    assert backend.redis_failures == 2
    await backend.close()


async def wait_for(condition: Callable[[], bool], what: str, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        await asyncio.sleep(0.02)


async def test_a_redis_outage_under_load_refuses_nothing_and_leaks_no_slot(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    # The probe: a key allowing 1000 requests at once, 8 clients, Redis gone for 10 s:
    # 43,950 of 72,470 requests refused. Here the key allows exactly as many requests at
    # once as there are clients, so one slot left taken is one refusal.
    with temporary_redis_prefix() as (url, prefix):
        proxy = TcpProxy("127.0.0.1", 6379)
        await proxy.start()
        services, _ = build_services(tmp_path, upstream.base_url, redis_prefix=prefix,
                                     redis_url=url.replace(":6379", f":{proxy.port}"))  # fmt: skip
        key_id, key = services.keys.create_key(project_id="default", role="app", name="busy",
                                          limits={"rpm": 1_000_000, "tpm": 100_000_000,
                                                  "concurrency": 8})  # fmt: skip
        backend = services.access.backend
        assert isinstance(backend, ResilientBackend)
        statuses: Counter[int] = Counter()
        stop = asyncio.Event()
        app = create_app(services.settings, services=services)
        transport = httpx.ASGITransport(app=app)
        try:
            await start_access(services.access)
            async with httpx.AsyncClient(transport=transport, base_url="http://keel") as client:

                async def user() -> None:
                    while not stop.is_set():
                        response = await client.post(
                            "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                            json={"model": "fake-model", "messages": [{"role": "user",
                                                                       "content": "hi"}]},
                        )  # fmt: skip
                        statuses[response.status_code] += 1
                        await asyncio.sleep(0)  # a refusal never waits: let the test run

                users = [asyncio.create_task(user()) for _ in range(8)]
                await wait_for(lambda: statuses.total() >= 100, "requests through Redis")
                for _ in range(2):  # two outages, as in the probe
                    await proxy.cut()
                    await wait_for(lambda: backend.degraded, "the outage noticed")
                    during = statuses.total() + 200
                    await wait_for(lambda n=during: statuses.total() >= n, "served meanwhile")
                    await proxy.restore()
                    await wait_for(lambda: not backend.degraded, "Redis back")
                    after = statuses.total() + 100
                    await wait_for(lambda n=after: statuses.total() >= n, "served after")
                stop.set()
                await asyncio.gather(*users)
            await backend.probe()
            leases = redis.Redis.from_url(url)
            try:
                taken = leases.zcard(f"{prefix}:c:cc:key:{key_id}")
            finally:
                leases.close()
        finally:
            await stop_services(services)
            await proxy.stop()
    assert statuses[429] == 0, statuses
    assert set(statuses) == {200}
    assert taken == 0  # no slot left taken in Redis either


async def test_readyz_reports_a_redis_outage_while_idle(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    # The probe: with no load, /readyz said "redis" for a whole outage; nothing asked Redis.
    with temporary_redis_prefix() as (url, prefix):
        proxy = TcpProxy("127.0.0.1", 6379)
        await proxy.start()
        services, _ = build_services(tmp_path, upstream.base_url, redis_prefix=prefix,
                                     redis_url=url.replace(":6379", f":{proxy.port}"))  # fmt: skip
        app = create_app(services.settings, services=services)
        transport = httpx.ASGITransport(app=app)
        states: list[str] = []

        async def state(client: httpx.AsyncClient) -> str:
            ready = await client.get("/readyz")
            assert ready.status_code == 200  # serving goes on either way
            states.append(ready.json()["checks"]["limits"]["state"])
            return states[-1]

        try:
            await start_access(services.access)
            async with httpx.AsyncClient(transport=transport, base_url="http://keel") as client:
                assert await state(client) == "redis"
                await proxy.cut()
                deadline = time.monotonic() + 30
                while "degraded" not in await state(client):
                    assert time.monotonic() < deadline, states
                    await asyncio.sleep(0.1)
                await proxy.restore()
                while await state(client) != "redis":
                    assert time.monotonic() < deadline, states
                    await asyncio.sleep(0.1)
        finally:
            await stop_services(services)
            await proxy.stop()
