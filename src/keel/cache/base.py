"""The `CacheBackend` interface and the entry it stores.

An entry is one answer under its exact key (its id); an entry with a vector is also
found by semantic search within its bucket (project, route identity, conversation
context and embedding model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import orjson

if TYPE_CHECKING:  # numpy loads only where vectors are handled
    import numpy as np
    import numpy.typing as npt

    Vector = npt.NDArray[np.float32]

Outcome = Literal["hits_exact", "hits_semantic", "misses"]
STAT_FIELDS = ("entries", "bytes", "hits_exact", "hits_semantic", "misses", "evictions")


@dataclass(frozen=True, slots=True)
class Entry:
    id: str
    project_id: str
    route: str
    prompt: str | None  # "name@version" of the prompt the request used, if any
    response: bytes  # the chat.completion body as JSON
    query: str  # the embedded text (last user turn); "" when the entry has no vector
    bucket: str | None
    embedding_model: str | None
    cost: float | None
    latency_ms: float
    created: float
    expires: float

    @property
    def size(self) -> int:
        """Bytes counted against the cache's size limit (vectors are counted apart)."""
        return len(self.response) + len(self.query.encode()) + 256

    def to_bytes(self) -> bytes:
        fields: dict[str, Any] = {k: getattr(self, k) for k in self.__slots__ if k != "response"}
        fields["response"] = orjson.Fragment(self.response)
        return orjson.dumps(fields)

    @classmethod
    def from_bytes(cls, data: bytes) -> Entry:
        fields = orjson.loads(data)
        fields["response"] = orjson.dumps(fields["response"])
        return cls(**fields)


class CacheBackend(Protocol):
    """Where entries live. Every method may raise on I/O trouble; ResponseCache turns
    that into a miss."""

    @property
    def name(self) -> str: ...

    async def get(self, entry_id: str) -> Entry | None:
        """The live entry (not expired), marked as recently used; None when absent."""
        ...

    async def put(self, entry: Entry, vector: Vector | None) -> None:
        """Store (or replace) an entry, then evict least recently used ones over the limits."""
        ...

    async def nearest(
        self, bucket: str, vector: Vector, count: int, min_similarity: float
    ) -> list[tuple[str, float]]:
        """Up to `count` (entry id, cosine similarity) in `bucket`, best first."""
        ...

    async def purge(
        self, project_id: str, route: str | None, prompt: str | None, entry_id: str | None
    ) -> int:
        """Delete the project's entries matching every given filter; returns how many."""
        ...

    async def count(self, project_id: str, outcome: Outcome) -> None: ...

    async def stats(self, project_id: str) -> dict[str, int]:
        """STAT_FIELDS of one project."""
        ...

    async def close(self) -> None: ...


def prompt_matches(stored: str | None, wanted: str) -> bool:
    """`name` matches every version of a prompt, `name@version` one."""
    if stored is None:
        return False
    return stored == wanted or ("@" not in wanted and stored.split("@", 1)[0] == wanted)
