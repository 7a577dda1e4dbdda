"""Steps 6 and 10 of the request path: answer from the cache, and keep new answers for it.

The lookup runs after the input guard, so the key is the request the upstream would see:
anonymized values are placeholders (`<EMAIL_1>`), and a cached answer is restored with
the values of the request it serves. Entries are keyed by project and by the route's
identity (its name and weighted targets), so a new model version, a split change or
another tenant never shares an answer. Stores happen in the background: the client
never waits for the cache.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from keel.cache.config import CacheConfig, CacheScope, directive_from_headers
from keel.cache.keys import cacheable
from keel.cache.service import CacheHit, ResponseCache
from keel.calls import Call, CallState
from keel.gateway.choices import choice_count
from keel.routing.table import Route


class CacheLookup:
    """Step 6: how the cache sees this call (None: not at all), and a stored answer."""

    def __init__(self, cache: ResponseCache, routes: Mapping[str, Mapping[str, Any]] | None = None):
        """`routes`: per-route overrides of the default CacheConfig (settings.cache_routes)."""
        self.cache = cache
        self._routes = {
            name: dataclasses.replace(cache.default, **dict(fields))
            for name, fields in (routes or {}).items()
        }

    async def run(
        self, call: Call, state: CallState, route: Route
    ) -> tuple[CacheScope | None, CacheHit | None]:
        scope = self._scope(call, state, route)
        if scope is None:
            return None, None
        span = state.begin("cache")
        # A `refresh` directive skips the lookup (and the answer is stored anew).
        hit = None if scope.directive == "refresh" else await self.cache.lookup(scope, state.body)
        state.end(span)
        state.cache = hit.header if hit is not None else "miss"
        if hit is not None:
            state.saved_cost = hit.cost
            spent_ms = (time.time_ns() - state.started_ns) / 1e6
            state.saved_ms = max(0.0, hit.latency_ms - spent_ms)
        return scope, hit

    def _scope(self, call: Call, state: CallState, route: Route) -> CacheScope | None:
        config: CacheConfig = self._routes.get(route.name, self.cache.default)
        body = state.body
        if not config.enabled or not cacheable(body, config):
            return None  # e.g. a sampled request (temperature above 0, no seed)
        if choice_count(body) > 1:
            return None  # n choices are n samples asked for now, not one answer kept
        directive = directive_from_headers(call.client_headers)
        if directive == "bypass":
            return None
        prompt = state.prompt
        return CacheScope(
            project_id=call.principal.project_id,
            route=route.name,
            route_identity=route.identity,
            config=config,
            directive=directive,
            prompt=f"{prompt.name}@{prompt.version}" if prompt is not None else None,
        )


class CacheStore:
    """Step 10: keep an answer without making the client wait (the task holds its refs)."""

    def __init__(self, cache: ResponseCache):
        self.cache = cache
        self._pending: set[asyncio.Task[bool]] = set()

    def run(self, scope: CacheScope, state: CallState, response: dict[str, Any],
            cost: float | None, latency_ms: float) -> None:  # fmt: skip
        task = asyncio.create_task(self.cache.store(scope, state.body, response, cost, latency_ms))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for stores under way (tests, shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
