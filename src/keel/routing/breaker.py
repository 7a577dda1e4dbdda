"""A per-target circuit breaker: stop sending to an upstream that keeps failing.

After a cool-down one probe request is let through; its outcome closes or re-opens it.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

BreakerState = Literal["closed", "open", "half_open"]

log = logging.getLogger("keel.routing")

FAILURE_WINDOW = 60.0  # seconds over which failures_per_minute counts
_MAX_REMEMBERED = 10_000  # failure times kept for the per-minute count; older ones go first


class CircuitBreaker:
    """Closed → (threshold consecutive failures) → open → (cool-down) → half-open probe.

    Every method is synchronous and never awaits, so within one event loop each call is
    atomic and needs no lock; the cost per request is a clock read and a few compares.
    """

    __slots__ = (
        "_clock",
        "_failure_times",
        "_failures",
        "_opened_at",
        "_probe_started_at",
        "cooldown",
        "failure_threshold",
        "last_error",
        "last_error_at",
        "name",
    )

    def __init__(
        self,
        failure_threshold: int = 5,
        cooldown: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        name: str = "",
    ):
        """`name` (the target, e.g. smollm2@2) is what the open and close log lines say."""
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
        self.name = name
        self.last_error: str | None = None
        self.last_error_at: float | None = None  # time.time() of the last failure
        self._failure_times: deque[float] = deque(maxlen=_MAX_REMEMBERED)

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

    def failures_per_minute(self) -> int:
        """Failed attempts in the last minute, retried elsewhere or not."""
        horizon = self._clock() - FAILURE_WINDOW
        times = self._failure_times
        while times and times[0] < horizon:
            times.popleft()
        return len(times)

    def health(self) -> dict[str, Any]:
        """What an operator needs to see of this target: state, last error, failure rate."""
        state = self.state
        return {
            "state": state,
            "healthy": state == "closed",
            "consecutive_failures": self._failures,
            "failures_per_minute": self.failures_per_minute(),
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
        }

    def record_success(self) -> None:
        if self._opened_at is not None:
            log.warning(
                "circuit breaker of %s closed: a probe request succeeded; it gets traffic again",
                self.name or "a target",
            )
        self._failures = 0
        self._opened_at = None
        self._probe_started_at = None

    def record_failure(self, error: str | None = None) -> None:
        """Count a failed attempt; `error` (what went wrong) is kept as last_error."""
        self._failures += 1
        self._failure_times.append(self._clock())
        self.last_error_at = time.time()
        if error is not None:
            self.last_error = error[:500]
        state = self.state
        if state == "half_open" or (state == "closed" and self._failures >= self.failure_threshold):
            if state == "closed":  # one line per outage: re-opening after a probe stays quiet
                log.warning(
                    "circuit breaker of %s opened after %d consecutive failures (last: %s); "
                    "no traffic to it for %gs, then one probe request",
                    self.name or "a target",
                    self._failures,
                    self.last_error or "unknown error",
                    self.cooldown,
                )
            self._opened_at = self._clock()
            self._probe_started_at = None
        # Already open: late failures of requests sent before it opened change nothing.
