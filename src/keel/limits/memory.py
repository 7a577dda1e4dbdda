"""The in-process limit backend (the default): exact within one process, nothing shared.

Everything runs on the event loop without awaiting, so each call is atomic.
"""

from __future__ import annotations

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


class MemoryBackend:
    name = "memory"

    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._windows: dict[str, dict[int, float]] = {}
        self._leases: dict[str, dict[str, float]] = {}
        self._spend: dict[str, tuple[float, float]] = {}  # key → (amount, expires at)
        self._warned: dict[str, float] = {}

    def _window(self, key: str, now: float) -> dict[int, float]:
        buckets = self._windows.setdefault(key, {})
        oldest = int(now) - WINDOW_S + 1
        for second in [s for s in buckets if s < oldest]:
            del buckets[second]
        return buckets

    def _slots(self, key: str, now: float) -> dict[str, float]:
        leases = self._leases.setdefault(key, {})
        for lease in [lease for lease, expires in leases.items() if expires <= now]:
            del leases[lease]
        return leases

    def spent(self, key: str) -> float:
        amount, expires = self._spend.get(key, (0.0, 0.0))
        return amount if expires > self._clock() else 0.0

    async def acquire(self, checks: Sequence[Check], lease: str) -> Decision:
        now = self._clock()
        bucket = int(now)
        states: list[CheckState] = []
        failed: int | None = None
        for index, check in enumerate(checks):
            if check.kind in ("requests", "tokens"):
                buckets = self._window(check.key, now)
                used = sum(buckets.values())
                reset = window_reset(list(buckets.items()), used, check.amount, check.limit, now)
                over = used + check.amount > check.limit
            elif check.kind == "concurrency":
                slots = self._slots(check.key, now)
                used, reset = float(len(slots)), 1.0
                over = used + 1 > check.limit
            else:
                used, reset = self.spent(check.key), check.reset_s
                over = used >= check.limit
            states.append(CheckState(used, reset))
            if over and failed is None:
                failed = index
        if failed is None:
            for check in checks:
                if check.kind in ("requests", "tokens"):
                    buckets = self._windows[check.key]
                    buckets[bucket] = buckets.get(bucket, 0.0) + check.amount
                elif check.kind == "concurrency":
                    self._leases[check.key][lease] = now + LEASE_TTL_S
        return Decision(failed, tuple(states), bucket)

    async def settle(self, settlement: Settlement) -> None:
        now = self._clock()
        if settlement.token_delta:
            for key in settlement.token_keys:
                buckets = self._windows.get(key)
                if buckets is not None and settlement.bucket in buckets:
                    buckets[settlement.bucket] += settlement.token_delta
        if settlement.spend:
            for key in settlement.spend_keys:
                amount = self.spent(key)
                self._spend[key] = (amount + settlement.spend, now + settlement.spend_ttl_s)
        for key in settlement.lease_keys:
            self._leases.get(key, {}).pop(settlement.lease, None)

    async def first_warning(self, key: str, ttl_s: float) -> bool:
        now = self._clock()
        if self._warned.get(key, 0.0) > now:
            return False
        self._warned[key] = now + ttl_s
        return True

    async def seed_spend(self, key: str, amount: float, ttl_s: float) -> None:
        if self.spent(key) == 0.0:
            self._spend[key] = (amount, self._clock() + ttl_s)

    async def close(self) -> None:
        pass
