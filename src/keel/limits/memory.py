"""The in-process limit backend (the default): exact within one process, nothing shared.

Everything runs on the event loop without awaiting, so each call is atomic.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

from keel.limits.base import (
    LEASE_TTL_S,
    WINDOW_S,
    Check,
    CheckState,
    Decision,
    Settlement,
    window_reset,
)

PRUNE_FLOOR = 1024  # entries a map may hold before expired ones are looked for


class _Window:
    """One sliding window of 1 s buckets, with its total and oldest second kept current.

    Under load a window holds up to 60 buckets; keeping the total and the oldest second
    means a request reads two numbers instead of scanning them all.
    """

    __slots__ = ("buckets", "oldest", "total")

    def __init__(self) -> None:
        self.buckets: dict[int, float] = {}  # second → amount
        self.total = 0.0
        self.oldest = 0  # the smallest second in `buckets` (while there is one)

    def expire(self, now: float) -> None:
        cutoff = int(now) - WINDOW_S + 1
        if not self.buckets or self.oldest >= cutoff:
            return  # nothing has left the window since the last call
        buckets = self.buckets
        for second in [s for s in buckets if s < cutoff]:
            del buckets[second]
        self.total = sum(buckets.values(), 0.0)
        self.oldest = min(buckets, default=0)

    def add(self, second: int, amount: float) -> None:
        buckets = self.buckets
        if not buckets or second < self.oldest:
            self.oldest = second
        buckets[second] = buckets.get(second, 0.0) + amount
        self.total += amount

    def reset(self, amount: float, limit: float, now: float) -> float:
        buckets = self.buckets
        if buckets and self.total + amount - limit <= 0 and buckets[self.oldest] > 0:
            return max(0.0, self.oldest + WINDOW_S - now)  # what window_reset finds, cheaply
        return window_reset(list(buckets.items()), self.total, amount, limit, now)


class _Leases:
    """Concurrency slots: lease → expiry, scanned for expired ones only when one may be."""

    __slots__ = ("expiry", "next_expiry")

    def __init__(self) -> None:
        self.expiry: dict[str, float] = {}
        self.next_expiry = math.inf  # no lease expires before this (it may be earlier)

    def expire(self, now: float) -> None:
        if now < self.next_expiry:
            return
        expiry = self.expiry
        for lease in [lease for lease, expires in expiry.items() if expires <= now]:
            del expiry[lease]
        self.next_expiry = min(expiry.values(), default=math.inf)

    def add(self, lease: str, expires: float) -> None:
        self.expiry[lease] = expires
        self.next_expiry = min(self.next_expiry, expires)


class MemoryBackend:
    name = "memory"

    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._leases: dict[str, _Leases] = {}
        self._spend: dict[str, tuple[float, float]] = {}  # key → (amount, expires at)
        self._warned: dict[str, float] = {}  # key → expires at
        # Both maps gain a key per budget per period: expired ones are dropped whenever a
        # map has doubled since the last pass, so each stays within twice its live keys.
        self._prune_spend_at = self._prune_warned_at = PRUNE_FLOOR

    def _prune_spend(self, now: float) -> None:
        if len(self._spend) >= self._prune_spend_at:
            self._spend = {k: v for k, v in self._spend.items() if v[1] > now}
            self._prune_spend_at = max(PRUNE_FLOOR, 2 * len(self._spend))

    def _prune_warned(self, now: float) -> None:
        if len(self._warned) >= self._prune_warned_at:
            self._warned = {k: v for k, v in self._warned.items() if v > now}
            self._prune_warned_at = max(PRUNE_FLOOR, 2 * len(self._warned))

    def _spent(self, key: str, now: float) -> float:
        amount, expires = self._spend.get(key, (0.0, 0.0))
        return amount if expires > now else 0.0

    def spent(self, key: str) -> float:
        return self._spent(key, self._clock())

    async def acquire(self, checks: Sequence[Check], lease: str) -> Decision:
        now = self._clock()
        states: list[CheckState] = []
        counters: list[_Window | _Leases | None] = []
        failed: int | None = None
        for index, check in enumerate(checks):
            kind = check.kind
            counter: _Window | _Leases | None
            if kind == "requests" or kind == "tokens":
                counter = self._windows.get(check.key)
                if counter is None:
                    counter = self._windows[check.key] = _Window()
                counter.expire(now)
                used = counter.total
                reset = counter.reset(check.amount, check.limit, now)
                over = used + check.amount > check.limit
            elif kind == "concurrency":
                counter = self._leases.get(check.key)
                if counter is None:
                    counter = self._leases[check.key] = _Leases()
                counter.expire(now)
                used, reset = float(len(counter.expiry)), 1.0
                over = used + 1 > check.limit
            else:
                counter = None
                used, reset = self._spent(check.key, now), check.reset_s
                over = used >= check.limit
            states.append(CheckState(used, reset))
            counters.append(counter)
            if over and failed is None:
                failed = index
        bucket = int(now)
        if failed is None:
            for check, counter in zip(checks, counters, strict=True):
                if isinstance(counter, _Window):
                    counter.add(bucket, check.amount)
                elif counter is not None:
                    counter.add(lease, now + LEASE_TTL_S)
        # Named, so that settling goes back here even when this backend stands in for Redis.
        return Decision(failed, tuple(states), bucket, self.name)

    async def settle(self, settlement: Settlement) -> None:
        now = self._clock()
        if settlement.token_delta:
            for key in settlement.token_keys:
                window = self._windows.get(key)
                if window is not None and settlement.bucket in window.buckets:
                    window.buckets[settlement.bucket] += settlement.token_delta
                    window.total += settlement.token_delta
        if settlement.spend:
            for key in settlement.spend_keys:
                amount = self._spent(key, now)
                self._spend[key] = (amount + settlement.spend, now + settlement.spend_ttl_s)
            self._prune_spend(now)
        for key in settlement.lease_keys:
            leases = self._leases.get(key)
            if leases is not None:
                leases.expiry.pop(settlement.lease, None)

    async def first_warning(self, key: str, ttl_s: float) -> bool:
        now = self._clock()
        if self._warned.get(key, 0.0) > now:
            return False
        self._warned[key] = now + ttl_s
        self._prune_warned(now)
        return True

    async def seed_spend(self, key: str, amount: float, ttl_s: float) -> None:
        now = self._clock()
        if self._spent(key, now) == 0.0:
            self._spend[key] = (amount, now + ttl_s)
            self._prune_spend(now)

    async def close(self) -> None:
        pass
