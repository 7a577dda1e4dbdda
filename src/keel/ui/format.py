"""How the console writes numbers, times and sizes (Jinja filters)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

DASH = "\N{EN DASH}"  # what an unknown value reads as


def when(us: int | None) -> str:
    """Microseconds since the epoch as a UTC time, to the second."""
    if us is None:
        return DASH
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(us / 1_000_000))


def ms(value: float | None) -> str:
    if value is None:
        return DASH
    if value >= 10_000:
        return f"{value / 1000:.1f} s"
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def cost(value: float | None) -> str:
    if value is None:
        return DASH
    return f"${value:.4f}" if value < 1 else f"${value:,.2f}"


def count(value: float | None) -> str:
    if value is None:
        return DASH
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 10_000:
        return f"{value / 1000:.1f}k"
    return f"{value:,.0f}"


def pct(value: float | None) -> str:
    return DASH if value is None else f"{value * 100:.1f}%"


FILTERS: dict[str, Callable[[Any], str]] = {
    "when": when,
    "ms": ms,
    "cost": cost,
    "count": count,
    "pct": pct,
}
