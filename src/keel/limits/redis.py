"""The Redis limit backend: counters shared by every replica, changed by atomic Lua scripts.

Key layout under the prefix: `w:<name>` hashes of second → count (sliding windows),
`c:<name>` sorted sets of lease → expiry (concurrency), `s:<name>` spend per period,
`warned:<name>` once-per-period markers. Scripts read the clock from Redis (TIME), so
replicas whose clocks drift still share one window.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from keel.limits.base import LEASE_TTL_S, Check, CheckState, Decision, Settlement

# KEYS: one counter per check. ARGV: lease, lease ttl, then (kind, limit, amount, reset) per
# check. Phase one reads every counter; only when all fit does phase two count the request.
ADMIT = """
local t = redis.call('TIME')
local sec = tonumber(t[1])
local now = sec + tonumber(t[2]) / 1000000
local oldest = sec - 59
local lease, lease_ttl = ARGV[1], tonumber(ARGV[2])
local failed = 0
local out = {}
for i, key in ipairs(KEYS) do
  local base = 2 + (i - 1) * 4
  local kind, limit, amount = ARGV[base + 1], tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  local used, reset, over = 0, 0, false
  if kind == 'w' then
    local raw = redis.call('HGETALL', key)
    local buckets = {}
    for j = 1, #raw, 2 do
      local s = tonumber(raw[j])
      if s < oldest then
        redis.call('HDEL', key, raw[j])
      else
        local v = tonumber(raw[j + 1])
        used = used + v
        if v > 0 then table.insert(buckets, {s, v}) end
      end
    end
    table.sort(buckets, function(a, b) return a[1] < b[1] end)
    local excess = used + amount - limit
    over = excess > 0
    if over then
      reset = 60
      local freed = 0
      for _, b in ipairs(buckets) do
        freed = freed + b[2]
        if freed >= excess then reset = b[1] + 60 - now; break end
      end
    elseif #buckets > 0 then
      reset = buckets[1][1] + 60 - now
    end
  elseif kind == 'c' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    used = redis.call('ZCARD', key)
    over = used + 1 > limit
    reset = 1
  else
    used = tonumber(redis.call('GET', key) or '0')
    over = used >= limit
    reset = tonumber(ARGV[base + 4])
  end
  if over and failed == 0 then failed = i end
  table.insert(out, tostring(used))
  table.insert(out, tostring(math.max(reset, 0)))
end
if failed == 0 then
  for i, key in ipairs(KEYS) do
    local base = 2 + (i - 1) * 4
    local kind = ARGV[base + 1]
    if kind == 'w' then
      redis.call('HINCRBY', key, sec, ARGV[base + 3])
      redis.call('EXPIRE', key, 61)
    elseif kind == 'c' then
      redis.call('ZADD', key, now + lease_ttl, lease)
      redis.call('EXPIRE', key, lease_ttl + 1)
    end
  end
end
return {failed, sec, out}
"""

# KEYS: token windows, then spend counters, then concurrency sets.
# ARGV: the three counts, bucket, token delta, spend, spend ttl, lease.
SETTLE = """
local nt, ns, nl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local bucket, delta = ARGV[4], tonumber(ARGV[5])
if delta ~= 0 then
  for i = 1, nt do
    if redis.call('HEXISTS', KEYS[i], bucket) == 1 then
      redis.call('HINCRBY', KEYS[i], bucket, delta)
    end
  end
end
for i = nt + 1, nt + ns do
  redis.call('INCRBYFLOAT', KEYS[i], ARGV[6])
  redis.call('EXPIRE', KEYS[i], ARGV[7])
end
for i = nt + ns + 1, nt + ns + nl do
  redis.call('ZREM', KEYS[i], ARGV[8])
end
return 0
"""

_KIND = {"requests": "w", "tokens": "w", "concurrency": "c", "budget": "s"}


MAX_CONNECTIONS = 32  # per process; one Lua call holds a connection for well under 1 ms


def connect(url: str, *, timeout_s: float = 0.5) -> aioredis.Redis:
    """A client with short timeouts (a dead Redis must cost a request milliseconds, not
    seconds) over a bounded pool: a burst of concurrent requests shares MAX_CONNECTIONS
    connections instead of opening one each at the same moment, a storm of connects that
    on a busy event loop outlasts the connect timeout and reads as an outage. `timeout_s`
    bounds each connect and each reply."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=2.0,  # waiting for a free connection
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        health_check_interval=30,
    )
    client: aioredis.Redis = aioredis.Redis.from_pool(pool)
    return client


class RedisBackend:
    name = "redis"

    def __init__(self, client: aioredis.Redis, prefix: str):
        self._redis = client
        self._prefix = prefix.rstrip(":") + ":"
        self._admit = client.register_script(ADMIT)
        self._settle = client.register_script(SETTLE)

    def _key(self, kind: str, name: str) -> str:
        return f"{self._prefix}{kind}:{name}"

    async def acquire(self, checks: Sequence[Check], lease: str) -> Decision:
        keys: list[str] = []
        args: list[Any] = [lease, LEASE_TTL_S]
        for check in checks:
            kind = _KIND[check.kind]
            keys.append(self._key(kind, check.key))
            amount = int(check.amount) if kind == "w" else check.amount
            args += [kind, check.limit, amount, check.reset_s]
        failed, bucket, raw = await self._admit(keys=keys, args=args)
        states = tuple(CheckState(float(raw[i]), float(raw[i + 1])) for i in range(0, len(raw), 2))
        return Decision(int(failed) - 1 if failed else None, states, int(bucket), self.name)

    async def settle(self, settlement: Settlement) -> None:
        token_keys = [self._key("w", k) for k in settlement.token_keys if settlement.token_delta]
        spend_keys = [self._key("s", k) for k in settlement.spend_keys if settlement.spend > 0]
        lease_keys = [self._key("c", k) for k in settlement.lease_keys]
        if not (token_keys or spend_keys or lease_keys):
            return
        await self._settle(
            keys=[*token_keys, *spend_keys, *lease_keys],
            args=[len(token_keys), len(spend_keys), len(lease_keys), settlement.bucket,
                  settlement.token_delta, repr(settlement.spend),
                  max(1, int(settlement.spend_ttl_s)), settlement.lease],
        )  # fmt: skip

    async def release(self, leases: Sequence[tuple[Sequence[str], str]]) -> None:
        if not leases:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for keys, lease in leases:
                for key in keys:
                    pipe.zrem(self._key("c", key), lease)
            await pipe.execute()

    async def first_warning(self, key: str, ttl_s: float) -> bool:
        created = await self._redis.set(self._key("warned", key), 1, nx=True, ex=max(1, int(ttl_s)))
        return bool(created)

    async def seed_spend(self, key: str, amount: float, ttl_s: float) -> None:
        await self._redis.set(self._key("s", key), repr(amount), nx=True, ex=max(1, int(ttl_s)))

    async def spent(self, key: str) -> float:
        value = await self._redis.get(self._key("s", key))
        return float(value) if value is not None else 0.0

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()
