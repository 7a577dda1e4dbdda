from __future__ import annotations

import numpy as np

from keel.cache.base import Entry
from keel.cache.memory import MemoryBackend
from tests.cache.conftest import Clock


def entry(entry_id: str, *, project: str = "p1", size: int = 100, ttl: float = 60.0,
          now: float = 1_000_000.0, route: str = "chat", prompt: str | None = None,
          bucket: str | None = None) -> Entry:  # fmt: skip
    return Entry(entry_id, project, route, prompt, b'"' + b"x" * (size - 2) + b'"', "q" if bucket
                 else "", bucket, "m" if bucket else None, 0.01, 5.0, now, now + ttl)  # fmt: skip


async def test_entries_expire_after_their_ttl() -> None:
    clock = Clock()
    backend = MemoryBackend(100, 10**6, clock=clock)
    await backend.put(entry("a", ttl=10), None)
    assert await backend.get("a") is not None
    clock.now += 11
    assert await backend.get("a") is None
    assert (await backend.stats("p1"))["entries"] == 0


async def test_least_recently_used_goes_first_when_entries_are_full() -> None:
    backend = MemoryBackend(2, 10**6, clock=Clock())
    await backend.put(entry("a"), None)
    await backend.put(entry("b"), None)
    await backend.get("a")  # a is now the most recently used
    await backend.put(entry("c"), None)
    assert await backend.get("b") is None
    assert await backend.get("a") is not None
    assert await backend.get("c") is not None
    assert (await backend.stats("p1"))["evictions"] == 1


async def test_bytes_limit_evicts_least_recently_used() -> None:
    backend = MemoryBackend(100, 1000, clock=Clock())
    for name in "abc":
        await backend.put(entry(name, size=300), None)  # 300 + 256 counted each
    stats = await backend.stats("p1")
    assert stats["entries"] == 1
    assert stats["bytes"] <= 1000
    assert await backend.get("c") is not None
    await backend.put(entry("huge", size=5000), None)  # larger than the cache: not stored
    assert await backend.get("huge") is None
    assert await backend.get("c") is not None


async def test_vectors_leave_the_index_with_their_entry() -> None:
    backend = MemoryBackend(1, 10**6, clock=Clock())
    vector = np.ones(4, dtype=np.float32) / 2
    await backend.put(entry("a", bucket="b1"), vector)
    assert await backend.nearest("b1", vector, 3, 0.5) == [("a", 1.0)]
    await backend.put(entry("b"), None)  # evicts a
    assert await backend.nearest("b1", vector, 3, 0.5) == []


async def test_purge_filters_by_route_prompt_and_entry_within_a_project() -> None:
    backend = MemoryBackend(100, 10**6, clock=Clock())
    await backend.put(entry("a", route="chat", prompt="support@1"), None)
    await backend.put(entry("b", route="chat", prompt="support@2"), None)
    await backend.put(entry("c", route="search"), None)
    await backend.put(entry("d", project="p2", route="chat", prompt="support@1"), None)
    assert await backend.purge("p1", None, "support@1", None) == 1
    assert await backend.purge("p1", None, "support", None) == 1  # every version
    assert await backend.purge("p1", "search", None, "nope") == 0
    assert await backend.purge("p1", "search", None, None) == 1
    assert await backend.get("d") is not None  # the other project's entry stays
    assert await backend.purge("p1", None, None, "d") == 0
