"""The router's in-process view: which targets answer for a model name, with what weights.

Built from a registry snapshot (plus static targets from settings) and swapped whole on
every change, so a request reads one consistent, immutable table without locks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from keel.providers.base import Provider


@dataclass(frozen=True)
class Target:
    """One model version the router can send to."""

    ref: str
    provider: Provider
    upstream_model: str
    defaults: dict[str, Any] = field(default_factory=dict)
    input_price_per_m: float = 0.0
    output_price_per_m: float = 0.0


@dataclass(frozen=True)
class Route:
    name: str
    weighted: tuple[tuple[Target, int], ...]
    sticky: Literal["key", "user"] | None = None
    fallbacks: tuple[Target, ...] = ()
    timeout: float | None = None
    retries: int = 2
    # The route's own circuit-breaker settings; None: the gateway-wide breaker_* settings.
    breaker_failures: int | None = None
    breaker_cooldown: float | None = None
    # Derived once per table build, so a request pays O(log n) to choose, not O(n²).
    cumulative: tuple[int, ...] = field(init=False, repr=False)
    failover: tuple[Target, ...] = field(init=False, repr=False)
    # What answers this route: changes with any target, weight or fallback (cache keys).
    identity: str = field(init=False, repr=False)
    # Does this route fence its targets off with breakers of its own (own settings)?
    own_breakers: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        running, cumulative = 0, []
        for _, weight in self.weighted:
            running += max(weight, 0)
            cumulative.append(running)
        object.__setattr__(self, "cumulative", tuple(cumulative))
        seen: set[str] = set()
        failover = []
        by_weight = sorted(self.weighted, key=lambda pair: -pair[1])
        for target in [t for t, w in by_weight if w > 0] + list(self.fallbacks):
            if target.ref not in seen:
                seen.add(target.ref)
                failover.append(target)
        object.__setattr__(self, "failover", tuple(failover))
        weighted = ",".join(f"{target.ref}:{weight}" for target, weight in self.weighted)
        fallbacks = ",".join(target.ref for target in self.fallbacks)
        object.__setattr__(self, "identity", f"{self.name}|{weighted}|{fallbacks}")
        own = self.breaker_failures is not None or self.breaker_cooldown is not None
        object.__setattr__(self, "own_breakers", own)

    @property
    def total_weight(self) -> int:
        return self.cumulative[-1] if self.cumulative else 0


@dataclass(frozen=True)
class RoutingTable:
    """Routes and model versions per project; a bare model name means its newest version."""

    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    versions: dict[tuple[str, str], Target] = field(default_factory=dict)
    latest: dict[tuple[str, str], Target] = field(default_factory=dict)
    static: dict[str, Target] = field(default_factory=dict)

    def lookup(self, project_id: str, model: str) -> Route | None:
        route = self.routes.get((project_id, model))
        if route is not None:
            return route
        target = (
            self.versions.get((project_id, model))
            or self.latest.get((project_id, model))
            or self.static.get(model)
        )
        return Route(name=model, weighted=((target, 1),)) if target else None

    def names(self, project_id: str) -> list[str]:
        names = {name for (project, name) in self.routes if project == project_id}
        names |= {name for (project, name) in self.latest if project == project_id}
        names |= set(self.static)
        return sorted(names)
