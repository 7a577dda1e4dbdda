"""When to try an upstream call again, and how long to wait before doing so.

Exponential backoff with full jitter, unless the upstream said how long (Retry-After).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from keel.errors import KeelError, ServiceUnavailable, UpstreamError, UpstreamTimeout

# Failures another attempt may cure: a server down, overloaded, slow or answering garbage.
# Client mistakes (400, 404, auth) fail the same way every time and are never retried.
_TRANSIENT = (ServiceUnavailable, UpstreamError, UpstreamTimeout)


@dataclass(frozen=True)
class RetryPolicy:
    """`max_attempts` counts the first try; `delay(n)` is the wait after failed attempt n.

    A Retry-After longer than `retry_after_cap` makes `delay` return None: holding the
    client that long is worse than failing over, so the caller should not wait on this
    target but fall back to the next one (or give up when there is none).
    """

    max_attempts: int = 3
    base_delay: float = 0.1
    max_delay: float = 2.0
    rng: random.Random | None = field(default=None, compare=False, repr=False)
    retry_after_cap: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1 (got {self.max_attempts})")
        if self.base_delay < 0 or self.max_delay < 0 or self.retry_after_cap < 0:
            raise ValueError("base_delay, max_delay and retry_after_cap must be 0 or more")

    def delay(self, attempt: int, retry_after: float | None = None) -> float | None:
        """Seconds to sleep after failed attempt `attempt` (1-based); None: do not wait."""
        if attempt < 1:
            raise ValueError(f"attempt counts from 1 (got {attempt})")
        if retry_after is not None:
            wait = max(0.0, retry_after)
            return wait if wait <= self.retry_after_cap else None
        # Capping the exponent keeps huge attempt numbers from overflowing a float.
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** min(attempt - 1, 62))
        # Full jitter: spreads the retries of many clients hit by the same outage.
        if self.rng is None:
            return random.uniform(0.0, ceiling)
        return self.rng.uniform(0.0, ceiling)

    def retryable(self, error: KeelError) -> bool:
        """Might the same request succeed if sent again?"""
        return isinstance(error, _TRANSIENT)
