from __future__ import annotations

from keel.limits.base import Check, Settlement
from keel.limits.memory import MemoryBackend


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_a_sliding_window_admits_the_limit_in_any_minute() -> None:
    clock = Clock()
    backend = MemoryBackend(clock)
    rpm = [Check("requests", "rpm:key:k", 3, 1, "key k")]
    admitted = [(await backend.acquire(rpm, "")).failed is None for _ in range(5)]
    assert admitted == [True, True, True, False, False]
    clock.now += 30  # half a minute later the window still holds all three
    refused = await backend.acquire(rpm, "")
    assert refused.failed == 0
    assert 29 <= refused.states[0].reset_s <= 30
    clock.now += 31  # the first requests have left the window
    assert (await backend.acquire(rpm, "")).failed is None


async def test_a_refused_request_is_counted_nowhere() -> None:
    backend = MemoryBackend(Clock())
    key = Check("requests", "rpm:key:k", 10, 1, "key k")
    project = Check("requests", "rpm:project:p", 1, 1, "project p")
    assert (await backend.acquire([key, project], "")).failed is None
    assert (await backend.acquire([key, project], "")).failed == 1
    # Only the admitted request counts against the key.
    assert (await backend.acquire([key], "")).states[0].used == 1


async def test_reserved_tokens_are_replaced_by_the_real_usage() -> None:
    backend = MemoryBackend(Clock())
    tpm = Check("tokens", "tpm:key:k", 1000, 600, "key k")
    first = await backend.acquire([tpm], "")
    assert first.failed is None
    assert (await backend.acquire([tpm], "")).failed == 0  # 600 + 600 > 1000
    await backend.settle(Settlement(first.bucket, token_keys=("tpm:key:k",), token_delta=12 - 600))
    again = await backend.acquire([tpm], "")
    assert again.failed is None
    assert again.states[0].used == 12


async def test_the_reset_time_counts_from_the_oldest_usage_still_in_the_window() -> None:
    clock = Clock()
    backend = MemoryBackend(clock)
    tpm = Check("tokens", "tpm:key:k", 1000, 100, "key k")
    first = await backend.acquire([tpm], "")
    for _ in range(2):
        clock.now += 10
        await backend.acquire([tpm], "")
    assert (await backend.acquire([tpm], "")).states[0].reset_s == 40  # the first leaves then
    # The first request used no tokens after all: the next to leave is the second.
    await backend.settle(Settlement(first.bucket, token_keys=("tpm:key:k",), token_delta=-100))
    state = (await backend.acquire([tpm], "")).states[0]
    assert (state.used, state.reset_s) == (300, 50)
    clock.now += 41  # the first has left the window
    state = (await backend.acquire([tpm], "")).states[0]
    assert (state.used, state.reset_s) == (400, 9)


async def test_concurrency_slots_come_back_when_released() -> None:
    backend = MemoryBackend(Clock())
    slot = Check("concurrency", "cc:key:k", 2, 1, "key k")
    one = await backend.acquire([slot], "a")
    await backend.acquire([slot], "b")
    assert (await backend.acquire([slot], "c")).failed == 0
    await backend.settle(Settlement(one.bucket, lease_keys=("cc:key:k",), lease="a"))
    assert (await backend.acquire([slot], "c")).failed is None


async def test_leaked_concurrency_slots_expire() -> None:
    clock = Clock()
    backend = MemoryBackend(clock)
    slot = Check("concurrency", "cc:key:k", 1, 1, "key k")
    await backend.acquire([slot], "lost")  # its request died without releasing it
    assert (await backend.acquire([slot], "next")).failed == 0
    clock.now += 901
    assert (await backend.acquire([slot], "next")).failed is None


async def test_spend_refuses_at_the_budget_and_warnings_come_once() -> None:
    backend = MemoryBackend(Clock())
    budget = Check("budget", "key:k:m2026-12", 1.0, 0, "key k", reset_s=3600)
    assert (await backend.acquire([budget], "")).failed is None
    await backend.settle(Settlement(0, spend_keys=("key:k:m2026-12",), spend=1.0, spend_ttl_s=99))
    refused = await backend.acquire([budget], "")
    assert refused.failed == 0
    assert refused.states[0].reset_s == 3600
    assert await backend.first_warning("key:k:m2026-12", 60)
    assert not await backend.first_warning("key:k:m2026-12", 60)
