"""Limits through a Redis outage: nothing refused beyond the limits, no slot left taken."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import pytest

from keel.limits.base import Check, Decision, Settlement
from keel.limits.memory import MemoryBackend
from keel.limits.resilient import ResilientBackend
from tests.limits.test_memory import Clock

SLOT = Check("concurrency", "cc:key:k", 8, 1, "key k")


class FlakyRedis:
    """Stands in for the Redis backend: shared counters that raise while `down`."""

    name = "redis"

    def __init__(self, clock: Callable[[], float]) -> None:
        self.counters = MemoryBackend(clock)
        self.down = False
        self.calls = 0

    def _reach(self) -> None:
        self.calls += 1
        if self.down:
            raise ConnectionError("Connection refused (Redis stopped)")

    async def acquire(self, checks: Sequence[Check], lease: str) -> Decision:
        self._reach()
        decision = await self.counters.acquire(checks, lease)
        return Decision(decision.failed, decision.states, decision.bucket, self.name)

    async def settle(self, settlement: Settlement) -> None:
        self._reach()
        await self.counters.settle(settlement)

    async def first_warning(self, key: str, ttl_s: float) -> bool:
        self._reach()
        return await self.counters.first_warning(key, ttl_s)

    async def seed_spend(self, key: str, amount: float, ttl_s: float) -> None:
        self._reach()

    async def ping(self) -> None:
        self._reach()

    async def release(self, leases: Sequence[tuple[Sequence[str], str]]) -> None:
        self._reach()
        for keys, lease in leases:
            await self.counters.settle(Settlement(0, lease_keys=tuple(keys), lease=lease))

    async def close(self) -> None:
        pass

    async def slots_taken(self) -> float:
        """Slots held in the shared counters (read while up or down)."""
        return await slots_taken(self.counters)


def resilient(clock: Clock, **options: float) -> tuple[ResilientBackend, FlakyRedis, MemoryBackend]:
    redis, local = FlakyRedis(clock), MemoryBackend(clock)
    return ResilientBackend(redis, local, retry_s=5, clock=clock, **options), redis, local


async def held(backend: ResilientBackend, lease: str) -> Callable[[], Awaitable[None]]:
    """Take a slot; returns the call that gives it back (as a finished request does)."""
    decision = await backend.acquire([SLOT], lease)
    assert decision.failed is None, "refused below the concurrency limit"

    async def release() -> None:
        await backend.settle(Settlement(decision.bucket, decision.backend,
                                        lease_keys=(SLOT.key,), lease=lease))  # fmt: skip

    return release


async def slots_taken(counters: MemoryBackend) -> float:
    # A check no request fits in: it reads the count and takes nothing.
    return (await counters.acquire([Check("concurrency", SLOT.key, 0, 1, "")], "")).states[0].used


async def test_an_outage_under_load_refuses_nothing_and_leaks_no_slot() -> None:
    # The probe: 8 clients on a key allowing 1000 at once got 43,950 refusals of 72,470
    # in a 10 s outage, because local slots were released to the dead Redis. Here the
    # limit equals the clients, so a single leaked slot refuses a request.
    clock = Clock()
    backend, redis, local = resilient(clock)
    refused = 0
    served = 0

    async def client(number: int) -> None:
        nonlocal refused, served
        for round_number in range(300):
            try:
                release = await held(backend, f"lease-{number}-{round_number}")
            except AssertionError:
                refused += 1
                continue
            await asyncio.sleep(0)  # the request is in flight
            await release()
            served += 1

    async def weather() -> None:
        for down in (True, False, True, False):  # two outages, as in the probe
            for _ in range(200):
                await asyncio.sleep(0)
            redis.down = down
            clock.now += 6  # past the retry interval: the next request tries Redis again

    await asyncio.gather(weather(), *(client(n) for n in range(8)))
    assert refused == 0
    assert served == 8 * 300
    assert await slots_taken(local) == 0
    await backend.probe()  # Redis answers: releases it missed are sent
    assert await redis.slots_taken() == 0
    assert backend.held_releases == 0


async def test_a_slot_taken_in_redis_and_released_during_an_outage_comes_back() -> None:
    clock = Clock()
    backend, redis, _ = resilient(clock)
    one = Check("concurrency", "cc:key:k", 1, 1, "key k")
    decision = await backend.acquire([one], "before")
    assert decision.backend == "redis"
    redis.down = True
    await backend.settle(Settlement(decision.bucket, decision.backend,
                                    lease_keys=(one.key,), lease="before"))  # fmt: skip
    assert backend.degraded
    assert backend.held_releases == 1
    redis.down = False
    clock.now += 6
    await backend.probe()
    assert backend.held_releases == 0
    # Without the held release Redis would refuse this slot for 15 minutes.
    assert (await backend.acquire([one], "after")).failed is None


async def test_a_slot_taken_locally_is_released_locally_once_redis_is_back() -> None:
    clock = Clock()
    backend, redis, local = resilient(clock)
    redis.down = True
    release = await held(backend, "during")
    assert await slots_taken(local) == 1
    redis.down = False
    clock.now += 6
    await backend.probe()
    calls = redis.calls
    await release()
    assert await slots_taken(local) == 0
    assert redis.calls == calls  # Redis never held it: nothing to tell it


async def test_held_releases_are_bounded_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("keel.limits.resilient.MAX_HELD_RELEASES", 3)
    clock = Clock()
    backend, redis, _ = resilient(clock)
    releases = [await held(backend, f"l{n}") for n in range(5)]
    redis.down = True
    for release in releases:
        await release()
    assert backend.held_releases == 3
    assert backend.releases_expired == 2


async def wait_for(condition: Callable[[], bool], what: str, limit: float = 10) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        await asyncio.sleep(0.01)


async def test_readiness_follows_redis_while_no_request_comes() -> None:
    # With no load, /readyz kept saying "redis" for a whole outage: nothing asked Redis.
    redis = FlakyRedis(time.time)
    backend = ResilientBackend(redis, MemoryBackend(), probe_s=0.02)
    await backend.start()
    try:
        assert backend.status()["state"] == "redis"
        redis.down = True
        await wait_for(lambda: "degraded" in backend.status()["state"], "degraded while idle")
        redis.down = False
        await wait_for(lambda: backend.status()["state"] == "redis", "recovered while idle")
    finally:
        await backend.close()
