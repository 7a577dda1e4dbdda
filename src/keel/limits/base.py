"""The `LimitBackend` interface: admit a request against counters, settle it afterwards.

Windows are sliding 60 s windows of 1 s buckets, so a limit holds in any minute (to
the second); concurrency slots are leases that expire if a process dies holding them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

WINDOW_S = 60
LEASE_TTL_S = 900  # a lease not released within 15 minutes belonged to a dead request

Kind = Literal["requests", "tokens", "concurrency", "budget"]


@dataclass(frozen=True, slots=True)
class Check:
    """One counter a request must fit in: `amount` more must stay within `limit`."""

    kind: Kind
    key: str  # counter name; the backend adds its own prefix
    limit: float
    amount: float  # 1 per request, the tokens reserved, 1 slot, or 0 (budgets only read)
    scope: str  # who the limit belongs to, for messages: "key abc", "route chat-default"
    reset_s: float = 0.0  # budgets: seconds until the period ends


@dataclass(frozen=True, slots=True)
class CheckState:
    used: float  # before this request
    reset_s: float  # seconds until enough usage leaves the window to admit this request


@dataclass(frozen=True, slots=True)
class Decision:
    failed: int | None  # index of the first check over its limit; None: admitted, counted
    states: tuple[CheckState, ...]
    bucket: int  # the second this request was counted in (tokens are reconciled there)
    backend: str = ""  # which backend counted it, so settling goes to the same one


@dataclass(frozen=True, slots=True)
class Settlement:
    """What to change once a request is over; every part may be empty."""

    bucket: int
    backend: str = ""
    token_keys: tuple[str, ...] = ()
    token_delta: int = 0  # real usage minus what was reserved (negative gives tokens back)
    spend_keys: tuple[str, ...] = ()
    spend: float = 0.0
    spend_ttl_s: float = 0.0
    lease_keys: tuple[str, ...] = ()
    lease: str = ""


class LimitBackend(Protocol):
    @property
    def name(self) -> str: ...

    async def acquire(self, checks: Sequence[Check], lease: str) -> Decision:
        """Check every counter and, only if all fit, count the request in all of them."""
        ...

    async def settle(self, settlement: Settlement) -> None: ...

    async def first_warning(self, key: str, ttl_s: float) -> bool:
        """True once per `key` until it expires (budget warnings are recorded once)."""
        ...

    async def seed_spend(self, key: str, amount: float, ttl_s: float) -> None:
        """Set a spend counter from the database unless the backend already has one."""
        ...

    async def close(self) -> None: ...


def window_reset(buckets: Sequence[tuple[int, float]], used: float, amount: float,
                 limit: float, now: float) -> float:  # fmt: skip
    """Seconds until enough of `buckets` (second, amount) leaves the window to fit `amount`."""
    excess = used + amount - limit
    if excess <= 0:
        oldest = min((b for b, v in buckets if v > 0), default=None)
        return max(0.0, oldest + WINDOW_S - now) if oldest is not None else 0.0
    freed = 0.0
    for second, value in sorted(buckets):
        freed += value
        if freed >= excess:
            return max(0.0, second + WINDOW_S - now)
    return float(WINDOW_S)  # never fits: more than the limit in one request
