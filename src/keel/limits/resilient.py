"""Redis first, in-process limits while Redis is unreachable: the gateway keeps serving.

While degraded, each replica enforces its limits alone (so a fleet may admit up to N
times a limit); /readyz says so and `redis_failures` counts every failed call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from redis.exceptions import RedisError

from keel.limits.base import Check, Decision, LimitBackend, Settlement
from keel.limits.memory import MemoryBackend

log = logging.getLogger("keel.limits")
_UNREACHABLE = (RedisError, OSError)
PROBE_S = 2.0  # while idle or degraded, Redis is pinged this often (off the request path)
MAX_HELD_RELEASES = 10_000  # slot releases kept for Redis while it is away; older ones expire
RELEASE_BATCH = 1_000  # held releases sent in one round trip


class SharedBackend(LimitBackend, Protocol):
    """The Redis backend as seen from here (tests put a backend that fails on demand)."""

    async def ping(self) -> None: ...

    async def release(self, leases: Sequence[tuple[Sequence[str], str]]) -> None:
        """Give back concurrency slots: (counter names, lease) each, in one round trip."""
        ...


class ResilientBackend:
    def __init__(
        self,
        shared: SharedBackend,
        local: MemoryBackend,
        *,
        retry_s: float = 5.0,
        probe_s: float = PROBE_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._shared = shared
        self._local = local
        self._retry_s = retry_s
        self._probe_s = probe_s
        self._clock = clock
        self._down_since: float | None = None
        self._next_try = 0.0
        self._last_ok = -float("inf")  # when Redis last answered a call
        # Slots taken in Redis whose release could not reach it: released once it answers,
        # so a short outage does not hold them for the lease's 15 minutes.
        self._held: deque[tuple[Sequence[str], str]] = deque()  # (counter names, lease)
        self._releasing = False
        self._watcher: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[bool]] = set()
        self.last_error = ""
        # Exported as metrics: calls to Redis that failed (requests meanwhile were served
        # by local limits), and held releases given up on (those slots expire instead).
        self.redis_failures = 0
        self.releases_expired = 0

    @property
    def name(self) -> str:
        return "memory" if self.degraded else "redis"

    @property
    def degraded(self) -> bool:
        return self._down_since is not None

    @property
    def held_releases(self) -> int:
        return len(self._held)

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

    def _answered(self, *, release_later: bool = True) -> None:
        self._last_ok = self._clock()
        if self._down_since is not None:
            log.warning("Redis reachable again; limits are shared across replicas")
            self._down_since = None
        if release_later and self._held and not self._releasing:
            # In the background: a request that found Redis back does not wait for these.
            task = asyncio.get_running_loop().create_task(self.release_held())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def acquire(self, checks: Sequence[Check], lease: str) -> Decision:
        if self._try_shared() and await self._released():
            try:
                decision = await self._shared.acquire(checks, lease)
            except _UNREACHABLE as exc:
                self._failed(exc)
                # The script may have run with its answer lost: a slot Redis would keep.
                if lease:
                    self._hold(tuple(c.key for c in checks if c.kind == "concurrency"), lease)
            else:
                self._answered()
                return decision
        return await self._local.acquire(checks, lease)

    async def settle(self, settlement: Settlement) -> None:
        # Settle where the request was counted: a slot taken locally during an outage is
        # released locally, even if Redis is back by now (Redis never held it).
        if settlement.backend == self._local.name:
            await self._local.settle(settlement)
            return
        if self._try_shared():
            try:
                await self._shared.settle(settlement)
            except _UNREACHABLE as exc:
                self._failed(exc)
            else:
                self._answered()
                return
        # Only the release is kept for later: removing a lease twice is harmless, adding
        # spend twice is not (spend also goes to the database; token windows empty within
        # a minute).
        self._hold(settlement.lease_keys, settlement.lease)

    def _hold(self, lease_keys: Sequence[str], lease: str) -> None:
        """Keep a slot release Redis did not get, to send it once Redis answers."""
        if not lease_keys:
            return
        if len(self._held) >= MAX_HELD_RELEASES:
            self._held.popleft()
            self.releases_expired += 1  # its slot expires with its lease instead
        self._held.append((lease_keys, lease))

    async def _released(self) -> bool:
        """Whether Redis may count this request: no release it missed is still owed to it.

        Slots released during an outage are still taken in Redis; counting against them
        would refuse requests below the limit. While they are being sent, requests are
        counted locally, as in the outage.
        """
        if not self._held:
            return True
        if self._releasing:
            return False
        return await self.release_held()

    async def release_held(self) -> bool:
        """Send Redis the slot releases it missed while unreachable; True once all went."""
        if self._releasing:
            return False
        self._releasing = True
        try:
            held = self._held
            while held:
                batch = [held.popleft() for _ in range(min(RELEASE_BATCH, len(held)))]
                try:
                    await self._shared.release(batch)
                except _UNREACHABLE as exc:
                    held.extendleft(reversed(batch))
                    self._failed(exc)
                    return False
            return True
        finally:
            self._releasing = False

    async def first_warning(self, key: str, ttl_s: float) -> bool:
        if self._try_shared():
            try:
                first = await self._shared.first_warning(key, ttl_s)
            except _UNREACHABLE as exc:
                self._failed(exc)
            else:
                self._answered()
                return first
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
        """Ping Redis now, so /readyz tells the truth without waiting for a request."""
        try:
            await self._shared.ping()
        except _UNREACHABLE as exc:
            self._failed(exc)
        else:
            self._answered(release_later=False)
            await self.release_held()

    async def start(self) -> None:
        """Probe once, then keep probing in the background while no request does."""
        await self.probe()
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(
                self._watch(), name="limits-redis-probe"
            )

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._probe_s)
            # Requests that reached Redis lately said all there is to say; an idle or
            # degraded process has to ask, else /readyz reports the last state it saw.
            if self.degraded or self._held or self._clock() - self._last_ok >= self._probe_s:
                try:
                    await self.probe()
                except Exception:  # a bug: keep probing rather than go blind
                    log.exception("probing Redis for limits failed")

    def status(self) -> dict[str, Any]:
        if not self.degraded:
            return {"ready": True, "state": "redis", "redis_failures": self.redis_failures}
        return {
            "ready": True,  # serving goes on with local limits
            "state": "degraded: Redis unreachable, limits enforced per process",
            "error": self.last_error,
            "redis_failures": self.redis_failures,
            "held_releases": len(self._held),
        }

    async def close(self) -> None:
        tasks: list[asyncio.Task[Any]] = [*self._background]
        if self._watcher is not None:
            tasks.append(self._watcher)
        self._watcher = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._shared.close()
