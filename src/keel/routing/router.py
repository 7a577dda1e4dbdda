"""Pick a target for each request and survive failing upstreams.

Order of attempts: the target chosen by weight (or by sticky hash), then the route's
other weighted targets, then its fallbacks. Retryable failures (connect errors, 429,
5xx, timeouts before the first byte) move on to the next target; between rounds the
retry policy waits (honouring Retry-After). A circuit breaker per target keeps traffic
off a dead upstream until a probe succeeds. Streams are only retried before they open.

An upstream that refuses Keel's credentials (401/403) is never asked again within the
request, nor is any other target served by the same provider client (the same key): the
request falls over to targets of other providers, if the route has any.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from keel.auth.keys import Principal
from keel.errors import KeelError, NotFound, ServiceUnavailable, UpstreamAuthError
from keel.providers.base import Provider
from keel.routing.breaker import CircuitBreaker
from keel.routing.retry import RetryPolicy
from keel.routing.table import Route, RoutingTable, Target

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    value: T
    route: str
    target: Target
    attempts: int

    def headers(self) -> dict[str, str]:
        return {
            "X-Keel-Route": self.route,
            "X-Keel-Target": self.target.ref,
            "X-Keel-Attempts": str(self.attempts),
        }


_SEVERITY = {"closed": 0, "half_open": 1, "open": 2}


def _sticky_point(route: str, subject: str, total: int) -> int:
    digest = hashlib.blake2b(f"{route}\x00{subject}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % total


def choose(route: Route, principal: Principal, user: str | None, rng: random.Random) -> Target:
    """The primary target: by sticky hash when the route asks for it, else by weight."""
    total = route.total_weight
    if len(route.weighted) == 1 or total <= 0:
        return route.weighted[0][0]
    subject = None
    if route.sticky == "key":
        subject = principal.key_id
    elif route.sticky == "user":
        subject = user or principal.key_id
    point = _sticky_point(route.name, subject, total) if subject else rng.randrange(total)
    return route.weighted[bisect.bisect_right(route.cumulative, point)][0]


def attempt_order(route: Route, primary: Target) -> Iterator[Target]:
    """Primary first, then the other weighted targets by weight, then the fallbacks."""
    yield primary
    for target in route.failover:
        if target.ref != primary.ref:
            yield target


def _served_by(target: Target, providers: list[Provider]) -> bool:
    # Identity, not name: one client per provider configuration, so the same key.
    return any(target.provider is provider for provider in providers)


def _naming(target: Target, error: UpstreamAuthError) -> UpstreamAuthError:
    """The same refusal, saying which of the route's targets met it."""
    named = UpstreamAuthError(f"target '{target.ref}': {error.message}", code=error.code)
    named.__cause__ = error
    return named


class Router:
    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        cooldown: float = 10.0,
        rng: random.Random | None = None,
    ):
        self.table = RoutingTable()
        self._breakers: dict[str, CircuitBreaker] = {}
        self._failure_threshold = failure_threshold
        self._cooldown = cooldown
        self._rng = rng or random.Random()

    def breaker(self, target: Target, route: Route | None = None) -> CircuitBreaker:
        """The target's breaker; a route with its own breaker settings has its own breakers
        (keyed `ref route=NAME`), so its thresholds never change another route's."""
        if route is None or not route.own_breakers:  # the hot path: one dict lookup
            breaker = self._breakers.get(target.ref)
            if breaker is None:
                breaker = CircuitBreaker(self._failure_threshold, self._cooldown, name=target.ref)
                self._breakers[target.ref] = breaker
            return breaker
        key = f"{target.ref} route={route.name}"
        failures = route.breaker_failures or self._failure_threshold
        cooldown = route.breaker_cooldown or self._cooldown
        breaker = self._breakers.get(key)
        if breaker is None or (breaker.failure_threshold, breaker.cooldown) != (failures, cooldown):
            breaker = CircuitBreaker(failures, cooldown, name=key)  # new settings: a fresh one
            self._breakers[key] = breaker
        return breaker

    def breaker_states(self) -> dict[str, str]:
        """Each target's breaker state; with per-route breakers, the worst of them."""
        states: dict[str, str] = {}
        for key, breaker in self._breakers.items():
            ref = key.split(" ", 1)[0]
            state = breaker.state
            if _SEVERITY[state] > _SEVERITY.get(states.get(ref, "closed"), 0):
                states[ref] = state
            else:
                states.setdefault(ref, state)
        return states

    def target_health(self) -> dict[str, dict[str, Any]]:
        """Per breaker (`ref`, or `ref route=NAME` for routes with their own): state, last
        error and failures per minute. Targets never called yet have no entry (healthy)."""
        return {key: breaker.health() for key, breaker in sorted(self._breakers.items())}

    def resolve(self, project_id: str, model: str) -> Route:
        route = self.table.lookup(project_id, model)
        if route is None:
            known = ", ".join(self.table.names(project_id)) or "none"
            raise NotFound(
                f"unknown model {model!r} (known: {known}); list them with GET /v1/models "
                "or 'keel models list'",
                param="model",
                code="model_not_found",
            )
        return route

    async def run(
        self,
        route: Route,
        principal: Principal,
        user: str | None,
        call: Callable[[Target], Awaitable[T]],
    ) -> Outcome[T]:
        """Call targets in order until one succeeds; raise the last error if none does."""
        primary = choose(route, principal, user, self._rng)
        policy = RetryPolicy(max_attempts=route.retries + 1)
        attempts = 0
        last: KeelError | None = None
        refused: list[Provider] = []  # provider clients whose credentials the upstream rejected
        for round_number in range(1, policy.max_attempts + 1):
            tried_any = False
            for target in attempt_order(route, primary):
                if _served_by(target, refused):
                    continue
                breaker = self.breaker(target, route)
                if not breaker.allow():
                    continue
                tried_any = True
                attempts += 1
                try:
                    if route.timeout is not None:
                        async with asyncio.timeout(route.timeout):
                            value = await call(target)
                    else:
                        value = await call(target)
                except TimeoutError:
                    last = ServiceUnavailable(
                        f"{target.ref} did not answer within the route's {route.timeout}s"
                    )
                    breaker.record_failure(last.message)
                    continue
                except UpstreamAuthError as error:
                    breaker.record_success()  # the upstream is up; Keel's key is what is wrong
                    refused.append(target.provider)
                    last = _naming(target, error)
                    continue
                except KeelError as error:
                    if not policy.retryable(error):
                        breaker.record_success()  # the upstream answered; the request was bad
                        raise
                    breaker.record_failure(f"{error.status}: {error.message}")
                    last = error
                    continue
                breaker.record_success()
                return Outcome(value, route.name, target, attempts)
            if not tried_any or all(_served_by(t, refused) for t in attempt_order(route, primary)):
                break  # nothing left that another round could try
            if round_number < policy.max_attempts:
                wait = policy.delay(round_number, last.retry_after if last else None)
                if wait is None:
                    break
                await asyncio.sleep(wait)
        if last is None:
            raise ServiceUnavailable(
                f"every target of {route.name!r} is failing and paused by its circuit breaker "
                f"({', '.join(t.ref for t in attempt_order(route, primary))}); retry shortly"
            )
        raise last
