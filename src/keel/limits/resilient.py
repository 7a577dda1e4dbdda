"""Redis first, in-process limits while Redis is unreachable: the gateway keeps serving.

While degraded, each replica enforces its limits alone (so a fleet may admit up to N
times a limit); /readyz says so and `redis_failures` counts every failed call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from redis.exceptions import RedisError

from keel.limits.base import Check, Decision, Settlement
from keel.limits.memory import MemoryBackend
from keel.limits.redis import RedisBackend

log = logging.getLogger("keel.limits")
_UNREACHABLE = (RedisError, OSError)


class ResilientBackend:
    def __init__(
        self,
        shared: RedisBackend,
        local: MemoryBackend,
        *,
        retry_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._shared = shared
        self._local = local
        self._retry_s = retry_s
        self._clock = clock
        self._down_since: float | None = None
        self._next_try = 0.0
        self.last_error = ""
        # Exported as a metric: calls to Redis that failed, each served by local limits.
        self.redis_failures = 0

    @property
    def name(self) -> str:
        return "memory" if self.degraded else "redis"

    @property
    def degraded(self) -> bool:
        return self._down_since is not None

    def _try_shared(self) -> bool:
        return self._down_since is None or self._clock() >= self._next_try

    def _failed(self, exc: BaseException) -> None:
        self.redis_failures += 1
        self.last_error = f"{exc.__class__.__name__}: {exc}"
        if self._down_since is None:
            self._down_since = self._clock()
            log.warning("Redis unreachable (%s); enforcing limits in this process only",
                        self.last_error)  # fmt: skip
        self._next_try = self._clock() + self._retry_s

    def _recovered(self) -> None:
        if self._down_since is not None:
            log.warning("Redis reachable again; limits are shared across replicas")
            self._down_since = None

    async def acquire(self, checks: Sequence[Check], lease: str) -> Decision:
        if self._try_shared():
            try:
                decision = await self._shared.acquire(checks, lease)
            except _UNREACHABLE as exc:
                self._failed(exc)
            else:
                self._recovered()
                return decision
        return await self._local.acquire(checks, lease)

    async def settle(self, settlement: Settlement) -> None:
        if settlement.backend == self._local.name:
            await self._local.settle(settlement)
            return
        try:
            await self._shared.settle(settlement)
        except _UNREACHABLE as exc:
            self._failed(exc)

    async def first_warning(self, key: str, ttl_s: float) -> bool:
        if self._try_shared():
            try:
                return await self._shared.first_warning(key, ttl_s)
            except _UNREACHABLE as exc:
                self._failed(exc)
        return await self._local.first_warning(key, ttl_s)

    async def seed_spend(self, key: str, amount: float, ttl_s: float) -> None:
        await self._local.seed_spend(key, amount, ttl_s)
        if not self._try_shared():
            return
        try:
            await self._shared.seed_spend(key, amount, ttl_s)
        except _UNREACHABLE as exc:
            self._failed(exc)

    async def probe(self) -> None:
        """Ping Redis now (at start), so /readyz tells the truth before the first request."""
        try:
            await self._shared.ping()
        except _UNREACHABLE as exc:
            self._failed(exc)
        else:
            self._recovered()

    def status(self) -> dict[str, Any]:
        if not self.degraded:
            return {"ready": True, "state": "redis", "redis_failures": self.redis_failures}
        return {
            "ready": True,  # serving goes on with local limits
            "state": "degraded: Redis unreachable, limits enforced per process",
            "error": self.last_error,
            "redis_failures": self.redis_failures,
        }

    async def close(self) -> None:
        await self._shared.close()
