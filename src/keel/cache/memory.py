"""The in-process cache backend (the default): an LRU dict bounded by entries and bytes.

Everything runs on the event loop without awaiting, so each call is atomic. Nothing is
shared with other processes; use the Redis backend for that.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from keel.cache.base import STAT_FIELDS, Entry, Outcome, prompt_matches
from keel.cache.vectors import VectorIndex

if TYPE_CHECKING:
    from keel.cache.base import Vector


class MemoryBackend:
    name = "memory"

    def __init__(self, max_entries: int, max_bytes: int, *, clock: Callable[[], float] = time.time):
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, Entry] = OrderedDict()  # least recently used first
        self._expiries: list[tuple[float, str]] = []  # heap; stale pairs are skipped
        self._buckets: dict[str, VectorIndex] = {}
        self._sizes: dict[str, int] = {}  # entry id → bytes counted for it
        self._bytes = 0
        self._counts: dict[str, Counter[str]] = {}

    def _project(self, project_id: str) -> Counter[str]:
        return self._counts.setdefault(project_id, Counter())

    def _drop(self, entry_id: str, *, evicted: bool = False) -> None:
        entry = self._entries.pop(entry_id, None)
        if entry is None:
            return
        size = self._sizes.pop(entry_id)
        counts = self._project(entry.project_id)
        counts["entries"] -= 1
        counts["bytes"] -= size
        self._bytes -= size
        if evicted:
            counts["evictions"] += 1
        if entry.bucket is not None and entry.bucket in self._buckets:
            index = self._buckets[entry.bucket]
            index.remove(entry_id)
            if not len(index):
                del self._buckets[entry.bucket]

    def _expire(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            _, entry_id = heapq.heappop(self._expiries)
            entry = self._entries.get(entry_id)
            if entry is not None and entry.expires <= now:
                self._drop(entry_id)

    async def get(self, entry_id: str) -> Entry | None:
        entry = self._entries.get(entry_id)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            self._drop(entry_id)
            return None
        self._entries.move_to_end(entry_id)
        return entry

    async def put(self, entry: Entry, vector: Vector | None) -> None:
        now = self._clock()
        self._expire(now)
        self._drop(entry.id)
        if entry.size > self._max_bytes or self._max_entries < 1:
            return
        size = entry.size
        if vector is not None and entry.bucket is not None:
            index = self._buckets.get(entry.bucket)
            if index is None:
                index = self._buckets[entry.bucket] = VectorIndex(len(vector))
            index.add(entry.id, vector)
            size += vector.nbytes
        self._entries[entry.id] = entry
        self._sizes[entry.id] = size
        heapq.heappush(self._expiries, (entry.expires, entry.id))
        if len(self._expiries) > 2 * len(self._entries) + 1024:  # replaced and evicted ones
            self._expiries = [(e.expires, e.id) for e in self._entries.values()]
            heapq.heapify(self._expiries)
        counts = self._project(entry.project_id)
        counts["entries"] += 1
        counts["bytes"] += size
        self._bytes += size
        while self._entries and (
            len(self._entries) > self._max_entries or self._bytes > self._max_bytes
        ):
            oldest = next(iter(self._entries))
            self._drop(oldest, evicted=True)

    async def nearest(
        self, bucket: str, vector: Vector, count: int, min_similarity: float
    ) -> list[tuple[str, float]]:
        index = self._buckets.get(bucket)
        if index is None or index.dimension != len(vector):
            return []
        return index.search(vector, count, min_similarity)

    async def purge(
        self, project_id: str, route: str | None, prompt: str | None, entry_id: str | None
    ) -> int:
        doomed = [
            e.id
            for e in self._entries.values()
            if e.project_id == project_id
            and (route is None or e.route == route)
            and (prompt is None or prompt_matches(e.prompt, prompt))
            and (entry_id is None or e.id == entry_id)
        ]
        for doomed_id in doomed:
            self._drop(doomed_id)
        return len(doomed)

    async def count(self, project_id: str, outcome: Outcome) -> None:
        self._project(project_id)[outcome] += 1

    async def stats(self, project_id: str) -> dict[str, int]:
        self._expire(self._clock())
        counts = self._counts.get(project_id, Counter())
        return {name: counts[name] for name in STAT_FIELDS}

    async def close(self) -> None:
        self._entries.clear()
        self._buckets.clear()
