"""Per-target health as operators read it: breaker state, last error, failures per minute.

One shape for /readyz, /api/routes/NAME, the console's routes page and `keel routes show`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from keel.routing.router import Router

NEVER_CALLED: Mapping[str, Any] = {
    "state": "closed",
    "healthy": True,
    "consecutive_failures": 0,
    "failures_per_minute": 0,
    "last_error": None,
    "last_error_at": None,
}


def _breaker_key(ref: str, route: Mapping[str, Any]) -> str:
    own = route.get("breaker_failures") is not None or route.get("breaker_cooldown") is not None
    return f"{ref} route={route['name']}" if own else ref


def route_health(router: Router, route: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target and fallback of a route (its registry view) → its breaker's health."""
    known = router.target_health()
    refs = [
        *route["targets"],
        *(f for f in route.get("fallbacks", []) if f not in route["targets"]),
    ]
    return {ref: dict(known.get(_breaker_key(ref, route), NEVER_CALLED)) for ref in refs}


def unhealthy_targets(router: Router) -> dict[str, dict[str, Any]]:
    """Breakers that are open or probing, by `ref` (or `ref route=NAME`)."""
    return {key: info for key, info in router.target_health().items() if not info["healthy"]}
