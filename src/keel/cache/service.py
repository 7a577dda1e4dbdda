"""`ResponseCache`: the gateway's one entry point to the cache (steps 5 and 9).

It never raises on backend or embedder trouble: a failed call is a miss, a logged
warning and one more in `failures` (exported as keel_cache_failures_total); for the next
few seconds the cache is then skipped, so a dead Redis does not slow every request.

An answer stored while the embedder is still loading is kept for exact hits at once and
gets its vector in the background once the model is up (the startup gap).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import orjson

from keel.cache import sse
from keel.cache.base import CacheBackend, Entry, Outcome
from keel.cache.config import CacheConfig, CacheScope
from keel.cache.keys import bucket_key, cacheable, exact_key, semantic_key
from keel.cache.verify import consistent

if TYPE_CHECKING:
    from keel.cache.base import Vector
    from keel.embeddings.base import Embedder
    from keel.settings import Settings

log = logging.getLogger("keel.cache")

HitKind = Literal["exact", "semantic"]
_CANDIDATES = 4  # semantic neighbours checked (by verification) before giving up
_RECENT_VECTORS = 1024  # embeddings of recent lookups, reused when their answer is stored
_FINISHED = frozenset({"stop", "length", "tool_calls", "function_call"})
_WARN_EVERY_S = 60.0
_LATE_LIMIT = 1024  # entries waiting for the embedder; more are kept exact-only, counted
_LATE_BATCH = 32


@dataclass(frozen=True, slots=True)
class CacheHit:
    kind: HitKind
    response: dict[str, Any]  # the stored (non-streamed) completion body, a fresh copy
    entry_id: str
    similarity: float  # 1.0 for exact hits
    cost: float | None  # what the original answer cost: saved by this hit
    latency_ms: float  # how long the original answer took
    created: float  # when it was stored (epoch seconds)

    @property
    def header(self) -> str:
        """The X-Keel-Cache value: hit-exact or hit-semantic."""
        return f"hit-{self.kind}"


def cache_header(hit: CacheHit | None) -> str:
    """X-Keel-Cache for a response: hit-exact, hit-semantic or miss."""
    return hit.header if hit is not None else "miss"


def _complete(response: dict[str, Any]) -> bool:
    choices = response.get("choices")
    return (
        isinstance(choices, list)
        and bool(choices)
        and all(isinstance(c, dict) and c.get("finish_reason") in _FINISHED for c in choices)
    )


class ResponseCache:
    def __init__(
        self,
        backend: CacheBackend,
        embedder: Callable[[], Embedder | None] | None = None,
        *,
        default: CacheConfig | None = None,
        clock: Callable[[], float] = time.time,
        remember_vectors: int = _RECENT_VECTORS,
        retry_s: float = 5.0,
        late_limit: int = _LATE_LIMIT,
    ):
        """`embedder` returns the embedder for semantic lookups (None: exact only);
        `default` is the policy of routes without their own (from settings)."""
        self.backend = backend
        self.default = default or CacheConfig()
        self._embedder = embedder or (lambda: None)
        self._clock = clock
        self._recent: OrderedDict[tuple[str, str], Vector] = OrderedDict()
        self._remember = remember_vectors
        self.counts: Counter[str] = Counter()  # this process: hits, misses, stores, failures
        self.last_error = ""
        self._warned_at = -_WARN_EVERY_S
        # After a failure the cache is skipped for a while: a dead Redis must not cost every
        # request its socket timeout.
        self._retry_s = retry_s
        self._skip_until = 0.0
        # Entries stored before the embedder was ready: entry id → (text, context).
        self._late: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._late_limit = late_limit
        self._late_task: asyncio.Task[None] | None = None

    @property
    def failures(self) -> int:
        return self.counts["failures"]

    def _failed(self, action: str, exc: BaseException) -> None:
        self.counts["failures"] += 1
        self.last_error = f"{exc.__class__.__name__}: {exc}"
        now = time.monotonic()
        self._skip_until = now + self._retry_s
        if now - self._warned_at >= _WARN_EVERY_S:  # one line a minute, not one per request
            self._warned_at = now
            log.warning("cache %s failed (%s); serving without the cache for %.0fs (%d "
                        "failures so far)", action, self.last_error, self._retry_s,
                        self.failures)  # fmt: skip

    def _skipping(self) -> bool:
        if time.monotonic() < self._skip_until:
            self.counts["skipped"] += 1
            return True
        return False

    # -- step 5 ----------------------------------------------------------------------------

    async def lookup(self, scope: CacheScope, body: dict[str, Any]) -> CacheHit | None:
        """A stored answer for this request, or None (a miss, or the cache does not apply)."""
        config = scope.config
        if scope.directive != "normal" or not cacheable(body, config) or self._skipping():
            return None
        try:
            hit = await self._lookup(scope, config, body)
        except Exception as exc:  # a broken backend or embedder is a miss, never an error
            self._failed("lookup", exc)
            return None
        outcome: Outcome = (
            "misses" if hit is None else ("hits_exact" if hit.kind == "exact" else "hits_semantic")
        )
        self.counts[outcome] += 1
        try:
            await self.backend.count(scope.project_id, outcome)
        except Exception as exc:  # only the shared statistics miss this one
            self._failed("count", exc)
        return hit

    async def _lookup(
        self, scope: CacheScope, config: CacheConfig, body: dict[str, Any]
    ) -> CacheHit | None:
        if config.exact:
            entry = await self.backend.get(exact_key(scope.project_id, scope.route_identity, body))
            if entry is not None and entry.project_id == scope.project_id:
                return self._hit("exact", entry, 1.0)
        if not config.semantic:
            return None
        key = semantic_key(scope.project_id, scope.route_identity, body)
        embedder = self._embedder()
        if key is None or embedder is None or not embedder.ready:
            return None
        vector = await self._embed(embedder, key.text)
        bucket = bucket_key(key.context, embedder.name)
        candidates = await self.backend.nearest(bucket, vector, _CANDIDATES, config.threshold)
        for entry_id, similarity in candidates:
            entry = await self.backend.get(entry_id)
            if (
                entry is None
                or entry.project_id != scope.project_id
                or entry.embedding_model != embedder.name
            ):
                continue
            if config.verify and not consistent(key.text, entry.query):
                continue
            return self._hit("semantic", entry, similarity)
        return None

    def _hit(self, kind: HitKind, entry: Entry, similarity: float) -> CacheHit:
        return CacheHit(kind, orjson.loads(entry.response), entry.id, similarity, entry.cost,
                        entry.latency_ms, entry.created)  # fmt: skip

    async def _embed(self, embedder: Embedder, text: str) -> Vector:
        remembered = self._recent.get((embedder.name, text))
        if remembered is not None:
            return remembered
        # The embedder runs the model on its own worker thread; the loop stays free.
        vector: Vector = (await embedder.embed([text])).vectors[0]
        self._recent[(embedder.name, text)] = vector
        while len(self._recent) > self._remember:
            self._recent.popitem(last=False)
        return vector

    # -- step 9 ----------------------------------------------------------------------------

    async def store(
        self,
        scope: CacheScope,
        body: dict[str, Any],
        response: dict[str, Any],
        cost: float | None,
        latency_ms: float,
    ) -> bool:
        """Keep a complete answer for later requests; True when it was stored.

        `response` is the non-streamed completion (for a stream, assemble it with
        keel.cache.sse.CompletionAssembler once the stream ended).
        """
        config = scope.config
        if scope.directive == "bypass" or not cacheable(body, config) or not _complete(response):
            return False
        if self._skipping():
            return False
        try:
            await self._store(scope, config, body, response, cost, latency_ms)
        except Exception as exc:  # the answer was served; only its reuse is lost
            self._failed("store", exc)
            return False
        self.counts["stores"] += 1
        return True

    async def _store(
        self,
        scope: CacheScope,
        config: CacheConfig,
        body: dict[str, Any],
        response: dict[str, Any],
        cost: float | None,
        latency_ms: float,
    ) -> None:
        vector: Vector | None = None
        query, bucket, model = "", None, None
        key = semantic_key(scope.project_id, scope.route_identity, body)
        embedder = self._embedder()
        semantic = config.semantic and key is not None and embedder is not None
        if semantic and key is not None and embedder is not None and embedder.ready:
            vector = await self._embed(embedder, key.text)
            query, bucket, model = key.text, bucket_key(key.context, embedder.name), embedder.name
        now = self._clock()
        entry = Entry(
            id=exact_key(scope.project_id, scope.route_identity, body),
            project_id=scope.project_id,
            route=scope.route,
            prompt=scope.prompt,
            response=orjson.dumps(response),
            query=query,
            bucket=bucket,
            embedding_model=model,
            cost=cost,
            latency_ms=latency_ms,
            created=now,
            expires=now + config.ttl_s,
        )
        await self.backend.put(entry, vector)
        if semantic and vector is None and key is not None and embedder is not None:
            self._embed_later(embedder, entry.id, key.text, key.context)

    def _embed_later(self, embedder: Embedder, entry_id: str, text: str, context: str) -> None:
        """Queue an entry stored before the embedder was ready; it serves exact hits now
        and semantic ones once its vector is added."""
        if entry_id not in self._late and len(self._late) >= self._late_limit:
            self.counts["late_dropped"] += 1  # stays exact-only
            return
        self._late[entry_id] = (text, context)
        if self._late_task is None or self._late_task.done():
            self._late_task = asyncio.get_running_loop().create_task(self._embed_waiting(embedder))

    async def _embed_waiting(self, embedder: Embedder) -> None:
        while self._late:
            batch = [self._late.popitem(last=False)
                     for _ in range(min(_LATE_BATCH, len(self._late)))]  # fmt: skip
            try:
                # Waits for the model to load; runs on the embedder's worker thread.
                vectors = (await embedder.embed([text for _, (text, _) in batch])).vectors
                for (entry_id, (text, context)), vector in zip(batch, vectors, strict=True):
                    entry = await self.backend.get(entry_id)
                    if entry is None or entry.bucket is not None:
                        continue  # purged, expired or stored anew (with a vector) since
                    await self.backend.put(dataclasses.replace(
                        entry, query=text, bucket=bucket_key(context, embedder.name),
                        embedding_model=embedder.name), vector)  # fmt: skip
                    self.counts["late_embedded"] += 1
            except Exception as exc:  # the entries keep serving exact hits; counted
                self.counts["late_dropped"] += len(batch)
                self.last_error = f"{exc.__class__.__name__}: {exc}"
                log.warning("cache: %d entries stored before the embedder was ready stay "
                            "exact-only (%s)", len(batch), self.last_error)  # fmt: skip

    async def wait_for_late_embeddings(self) -> None:
        """Until entries stored before the embedder was ready have their vectors (tests)."""
        while self._late_task is not None and not self._late_task.done():
            await asyncio.shield(self._late_task)

    # -- streaming -------------------------------------------------------------------------

    def replay_sse(
        self, hit: CacheHit, model_name: str, include_usage: bool
    ) -> AsyncIterator[bytes]:
        """The hit as a chat.completion.chunk SSE stream ending in `data: [DONE]`."""
        return sse.replay_sse(hit.response, model_name, include_usage)

    # -- control plane ---------------------------------------------------------------------

    async def purge(
        self,
        project_id: str,
        route: str | None = None,
        prompt: str | None = None,
        entry_id: str | None = None,
    ) -> int:
        """Delete the project's entries matching every filter given (all with none).

        `prompt` is "name@version" (one version) or "name" (every version). Raises on
        backend trouble: an operator asked for this and must know it did not happen.
        """
        return await self.backend.purge(project_id, route, prompt, entry_id)

    async def stats(self, project_id: str) -> dict[str, Any]:
        """entries, bytes, hits_exact, hits_semantic, misses, evictions of one project."""
        counts = await self.backend.stats(project_id)
        return {"backend": self.backend.name, **counts}

    def status(self) -> dict[str, Any]:
        return {"backend": self.backend.name, "failures": self.failures,
                "skipped": self.counts["skipped"], "awaiting_embedding": len(self._late),
                "error": self.last_error or None}  # fmt: skip

    async def close(self) -> None:
        if self._late_task is not None:
            self._late_task.cancel()
        await self.backend.close()


def build_response_cache(
    settings: Settings, embedder: Callable[[], Embedder | None] | None = None
) -> ResponseCache:
    """The cache `settings` ask for (no I/O: Redis connects on first use)."""
    backend: CacheBackend
    if settings.cache_backend == "redis" and settings.redis_url:
        from keel.cache.redis import RedisBackend
        from keel.limits.redis import connect

        backend = RedisBackend(connect(settings.redis_url), settings.redis_prefix,
                               settings.cache_max_entries, settings.cache_max_bytes)  # fmt: skip
    else:
        from keel.cache.memory import MemoryBackend

        backend = MemoryBackend(settings.cache_max_entries, settings.cache_max_bytes)
    return ResponseCache(backend, embedder, default=default_config(settings))


def default_config(settings: Settings) -> CacheConfig:
    """The policy of routes that set none of their own."""
    return CacheConfig(
        enabled=settings.cache,
        mode=settings.cache_mode,
        ttl_s=settings.cache_ttl,
        threshold=settings.cache_semantic_threshold,
        verify=settings.cache_verify,
    )
