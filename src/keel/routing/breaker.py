"""A per-target circuit breaker: stop sending to an upstream that keeps failing.

After a cool-down one probe request is let through; its outcome closes or re-opens it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Closed → (threshold consecutive failures) → open → (cool-down) → half-open probe.

    Every method is synchronous and never awaits, so within one event loop each call is
    atomic and needs no lock; the cost per request is a clock read and a few compares.
    """

    __slots__ = (
        "_clock",
        "_failures",
        "_opened_at",
        "_probe_started_at",
        "cooldown",
        "failure_threshold",
    )

    def __init__(
        self,
        failure_threshold: int = 5,
        cooldown: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1 (got {failure_threshold})")
        if cooldown < 0:
            raise ValueError(f"cooldown must be 0 seconds or more (got {cooldown})")
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None  # None while closed
        self._probe_started_at: float | None = None  # set while a half-open probe is out

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if self._probe_started_at is None and self._clock() - self._opened_at < self.cooldown:
            return "open"
        return "half_open"

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def allow(self) -> bool:
        """May a request go to this target now? In half-open, True for one probe at a time."""
        if self._opened_at is None:
            return True
        now = self._clock()
        if self._probe_started_at is None:
            if now - self._opened_at < self.cooldown:
                return False
            self._probe_started_at = now
            return True
        # A probe whose caller never reported (cancelled, crashed) must not fence the target
        # off forever: after another cool-down its turn passes to the next caller.
        if now - self._probe_started_at >= self.cooldown:
            self._probe_started_at = now
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probe_started_at = None

    def record_failure(self) -> None:
        self._failures += 1
        state = self.state
        if state == "half_open" or (state == "closed" and self._failures >= self.failure_threshold):
            self._opened_at = self._clock()
            self._probe_started_at = None
        # Already open: late failures of requests sent before it opened change nothing.
