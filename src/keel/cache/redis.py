"""The Redis cache backend: entries shared by every replica, vectors searched locally.

Plain Redis 7 has no vector search, so each vector is appended to a stream per bucket
when its entry is written. Each process keeps a local VectorIndex per bucket, catches up
with the stream before a search (one XRANGE, usually empty) and reads the chosen entry
from Redis, so a purged or evicted entry is never served even if a stale vector remains
in some replica's index (it is dropped from there on sight).

Keys under `<prefix>:cache:`: `e:<id>` entry hashes (with a TTL), `ids:<project>` entry
ids per project, `meta` id → project and size, `lru` (last use, ordered by a counter so
two uses in one millisecond keep their order) and `exp` (expiry) sorted sets, `acct`
counters, `v:<bucket>` vector streams. One Redis node only: the scripts touch keys they
derive (not Cluster-safe).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import redis.asyncio as aioredis

from keel.cache.base import STAT_FIELDS, Entry, Outcome, prompt_matches
from keel.cache.vectors import VectorIndex

if TYPE_CHECKING:
    from keel.cache.base import Vector

# Shared by the scripts: remove one entry and its accounting; evicted counts an eviction.
_DROP = """
local function drop(p, id, evicted)
  local meta = redis.call('HGET', p .. 'meta', id)
  if not meta then return 0 end
  local project, size = string.match(meta, '^(.*)\\t(%d+)$')
  size = tonumber(size)
  redis.call('HDEL', p .. 'meta', id)
  redis.call('ZREM', p .. 'lru', id)
  redis.call('ZREM', p .. 'exp', id)
  redis.call('DEL', p .. 'e:' .. id)
  redis.call('SREM', p .. 'ids:' .. project, id)
  redis.call('HINCRBY', p .. 'acct', project .. ':entries', -1)
  redis.call('HINCRBY', p .. 'acct', project .. ':bytes', -size)
  redis.call('HINCRBY', p .. 'acct', '*:entries', -1)
  redis.call('HINCRBY', p .. 'acct', '*:bytes', -size)
  if evicted then redis.call('HINCRBY', p .. 'acct', project .. ':evictions', 1) end
  return 1
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function sweep(p, now)
  local expired = redis.call('ZRANGEBYSCORE', p .. 'exp', '-inf', now, 'LIMIT', 0, 200)
  for _, id in ipairs(expired) do drop(p, id, false) end
end
"""

# KEYS: entry hash, vector stream (or the entry again when there is no vector).
# ARGV: prefix, id, data, project, route, prompt, size, ttl ms, max entries, max bytes,
#       vector bytes, embedding model, stream length.
STORE = (
    _DROP
    + """
local p, id = ARGV[1], ARGV[2]
local project, size, ttl = ARGV[4], tonumber(ARGV[7]), tonumber(ARGV[8])
local now = now_ms()
sweep(p, now)
drop(p, id, false)
redis.call('HSET', KEYS[1], 'd', ARGV[3], 'r', ARGV[5], 'pv', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('HSET', p .. 'meta', id, project .. '\\t' .. size)
redis.call('ZADD', p .. 'lru', redis.call('INCR', p .. 'uses'), id)
redis.call('ZADD', p .. 'exp', now + ttl, id)
redis.call('SADD', p .. 'ids:' .. project, id)
redis.call('HINCRBY', p .. 'acct', project .. ':entries', 1)
redis.call('HINCRBY', p .. 'acct', project .. ':bytes', size)
local entries = redis.call('HINCRBY', p .. 'acct', '*:entries', 1)
local bytes = redis.call('HINCRBY', p .. 'acct', '*:bytes', size)
local max_entries, max_bytes = tonumber(ARGV[9]), tonumber(ARGV[10])
while entries > max_entries or bytes > max_bytes do
  local oldest = redis.call('ZRANGE', p .. 'lru', 0, 0)[1]
  if not oldest then break end
  drop(p, oldest, true)
  entries = tonumber(redis.call('HGET', p .. 'acct', '*:entries'))
  bytes = tonumber(redis.call('HGET', p .. 'acct', '*:bytes'))
end
if ARGV[11] ~= '' and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[13], '*',
             'i', id, 'v', ARGV[11], 'm', ARGV[12], 'x', now + ttl)
  if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
end
return 1
"""
)

# KEYS: entry hash. ARGV: prefix, id. The entry's data, marked as just used.
FETCH = """
local data = redis.call('HGET', KEYS[1], 'd')
if data then
  redis.call('ZADD', ARGV[1] .. 'lru', redis.call('INCR', ARGV[1] .. 'uses'), ARGV[2])
end
return data
"""

# ARGV: prefix, ids to remove. Returns how many were there.
REMOVE = (
    _DROP
    + """
local removed = 0
for i = 2, #ARGV do removed = removed + drop(ARGV[1], ARGV[i], false) end
return removed
"""
)

# ARGV: prefix. Drops expired entries (up to 200 per call).
SWEEP = (
    _DROP
    + """
sweep(ARGV[1], now_ms())
return 0
"""
)

_SYNC_PAGE = 1000
# Up to this many new vectors are added during a lookup; a longer backlog (a new replica)
# is read by a background task, adding in a worker thread, while the bucket answers misses.
_INLINE_ROWS = 64

log = logging.getLogger("keel.cache")


@dataclass
class _LocalBucket:
    index: VectorIndex | None = None
    last_id: str = "0-0"
    expires: dict[str, float] = field(default_factory=dict)  # entry id → expiry (s)
    warming: asyncio.Task[None] | None = None  # reading a backlog in the background


class RedisBackend:
    name = "redis"

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        max_entries: int,
        max_bytes: int,
        *,
        local_vectors: int | None = None,
    ):
        self._redis = client
        self._prefix = f"{prefix.rstrip(':')}:cache:"
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._store = client.register_script(STORE)
        self._fetch = client.register_script(FETCH)
        self._remove = client.register_script(REMOVE)
        self._sweep = client.register_script(SWEEP)
        # Local indexes, least recently searched first, capped in vectors held.
        self._local: OrderedDict[str, _LocalBucket] = OrderedDict()
        self._local_cap = local_vectors or max_entries
        self._bucket_of: dict[str, str] = {}  # entry id → the local bucket holding it

    def _key(self, name: str) -> str:
        return self._prefix + name

    async def get(self, entry_id: str) -> Entry | None:
        data = await self._fetch(keys=[self._key(f"e:{entry_id}")], args=[self._prefix, entry_id])
        if data is None:
            self._forget(entry_id)
            return None
        entry = Entry.from_bytes(data)
        if entry.expires <= time.time():
            return None
        return entry

    async def put(self, entry: Entry, vector: Vector | None) -> None:
        stream = self._key(f"v:{entry.bucket}") if vector is not None else None
        size = entry.size + (vector.nbytes if vector is not None else 0)
        ttl_ms = max(1, int((entry.expires - time.time()) * 1000))
        await self._store(
            keys=[self._key(f"e:{entry.id}"), stream or self._key(f"e:{entry.id}")],
            args=[self._prefix, entry.id, entry.to_bytes(), entry.project_id, entry.route,
                  entry.prompt or "", size, ttl_ms, self._max_entries, self._max_bytes,
                  vector.astype(np.float32).tobytes() if vector is not None else b"",
                  entry.embedding_model or "", self._max_entries],
        )  # fmt: skip

    def _forget(self, entry_id: str) -> None:
        bucket = self._bucket_of.get(entry_id)
        local = self._local.get(bucket) if bucket is not None else None
        if local is None or local.warming is not None:
            return  # a bucket being read in the background is left to its reader
        del self._bucket_of[entry_id]
        if local.index is not None:
            local.index.remove(entry_id)
        local.expires.pop(entry_id, None)

    def _add_rows(
        self, bucket: str, local: _LocalBucket, rows: list[tuple[bytes, dict[bytes, bytes]]],
        dimension: int,
    ) -> None:  # fmt: skip
        now = time.time()
        fresh: dict[str, Vector] = {}  # a later write of an id replaces an earlier one
        for stream_id, fields in rows:
            local.last_id = stream_id.decode()
            expires = int(fields[b"x"]) / 1000
            vector = np.frombuffer(fields[b"v"], dtype=np.float32)
            if expires <= now or len(vector) != dimension:
                continue
            entry_id = fields[b"i"].decode()
            fresh.pop(entry_id, None)
            fresh[entry_id] = vector
            local.expires[entry_id] = expires
            self._bucket_of[entry_id] = bucket
        if fresh:
            if local.index is None:
                local.index = VectorIndex(dimension)
            local.index.add_many(list(fresh), np.stack(list(fresh.values())))

    async def _read(
        self, bucket: str, local: _LocalBucket
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        rows: list[tuple[bytes, dict[bytes, bytes]]] = await self._redis.xrange(  # type: ignore[assignment]
            self._key(f"v:{bucket}"), f"({local.last_id}", "+", count=_SYNC_PAGE
        )
        return rows

    async def _warm(
        self, bucket: str, local: _LocalBucket, rows: list[tuple[bytes, dict[bytes, bytes]]],
        dimension: int,
    ) -> None:  # fmt: skip
        """Read a bucket's backlog (a new replica, a burst of stores) off the event loop."""
        try:
            while rows:
                await asyncio.to_thread(self._add_rows, bucket, local, rows, dimension)
                if len(rows) < _SYNC_PAGE:
                    break
                rows = await self._read(bucket, local)
        except Exception as exc:  # the next lookup goes on from the last id read
            log.warning("reading the vectors of cache bucket %s failed: %s", bucket, exc)
        finally:
            local.warming = None

    async def _catch_up(self, bucket: str, local: _LocalBucket, dimension: int) -> bool:
        """Add what other replicas stored since the last lookup; False while a backlog is
        read in the background (the bucket is not searched meanwhile)."""
        if local.warming is not None:
            return False
        rows = await self._read(bucket, local)
        if len(rows) <= _INLINE_ROWS:
            self._add_rows(bucket, local, rows, dimension)
            return True
        local.warming = asyncio.create_task(self._warm(bucket, local, rows, dimension))
        return False

    def _trim_local(self, keep: str) -> None:
        held = sum(len(b.index) for b in self._local.values() if b.index is not None)
        for bucket in list(self._local):  # least recently searched first
            if held <= self._local_cap:
                break
            dropped = self._local[bucket]
            if bucket == keep or dropped.warming is not None:
                continue
            del self._local[bucket]
            for entry_id in dropped.expires:
                self._bucket_of.pop(entry_id, None)
            held -= len(dropped.index) if dropped.index is not None else 0

    async def nearest(
        self, bucket: str, vector: Vector, count: int, min_similarity: float
    ) -> list[tuple[str, float]]:
        local = self._local.get(bucket)
        if local is None:
            local = self._local[bucket] = _LocalBucket()
        self._local.move_to_end(bucket)
        if not await self._catch_up(bucket, local, len(vector)):
            return []
        self._trim_local(bucket)
        if local.index is None:
            return []
        now = time.time()
        found = local.index.search(vector, count, min_similarity)
        return [(entry_id, score) for entry_id, score in found if local.expires[entry_id] > now]

    async def purge(
        self, project_id: str, route: str | None, prompt: str | None, entry_id: str | None
    ) -> int:
        await self._sweep(args=[self._prefix])
        ids_key = self._key(f"ids:{project_id}")
        if entry_id is not None:
            ids = [entry_id] if await self._redis.sismember(ids_key, entry_id) else []
        else:
            members: set[bytes] = await self._redis.smembers(ids_key)  # type: ignore[assignment]
            ids = sorted(member.decode() for member in members)
        if route is not None or prompt is not None:
            async with self._redis.pipeline(transaction=False) as pipe:
                for candidate in ids:
                    pipe.hmget(self._key(f"e:{candidate}"), "r", "pv")
                found: list[list[Any]] = await pipe.execute()
            ids = [
                candidate
                for candidate, (stored_route, stored_prompt) in zip(ids, found, strict=True)
                if (route is None or (stored_route or b"").decode() == route)
                and (prompt is None or prompt_matches((stored_prompt or b"").decode(), prompt))
            ]
        removed = 0
        for start in range(0, len(ids), 500):
            batch = ids[start : start + 500]
            removed += int(await self._remove(args=[self._prefix, *batch]))
            for gone in batch:
                self._forget(gone)
        return removed

    async def count(self, project_id: str, outcome: Outcome) -> None:
        await self._redis.hincrby(self._key("acct"), f"{project_id}:{outcome}", 1)

    async def stats(self, project_id: str) -> dict[str, int]:
        await self._sweep(args=[self._prefix])
        values = await self._redis.hmget(
            self._key("acct"), [f"{project_id}:{name}" for name in STAT_FIELDS]
        )
        return {name: int(v or 0) for name, v in zip(STAT_FIELDS, values, strict=True)}

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        for local in self._local.values():
            if local.warming is not None:
                local.warming.cancel()
        await self._redis.aclose()
