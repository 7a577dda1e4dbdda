from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from keel.limits.base import Check, Settlement
from keel.limits.memory import MemoryBackend
from keel.limits.redis import RedisBackend, connect
from keel.limits.resilient import ResilientBackend
from tests.support.redis import temporary_redis_prefix


@pytest.fixture
async def backends() -> AsyncIterator[tuple[RedisBackend, RedisBackend]]:
    """Two backends (as two replicas would have) over one real Redis and one prefix."""
    with temporary_redis_prefix() as (url, prefix):
        a, b = RedisBackend(connect(url), prefix), RedisBackend(connect(url), prefix)
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
