"""Steps 5 and 9 of the request path: answer from the cache, and keep new answers for it.

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
from typing import TYPE_CHECKING, Any

from keel.cache.config import CacheConfig, CacheScope, directive_from_headers
from keel.cache.keys import cacheable
from keel.cache.service import CacheHit, ResponseCache
from keel.gateway.choices import choice_count

if TYPE_CHECKING:
    from keel.gateway.pipeline import GatewayRequest
    from keel.routing.table import Route


class CacheStep:
    def __init__(self, cache: ResponseCache, routes: Mapping[str, Mapping[str, Any]] | None = None):
        """`routes`: per-route overrides of the default CacheConfig (settings.cache_routes)."""
        self.cache = cache
        self._routes = {
            name: dataclasses.replace(cache.default, **dict(fields))
            for name, fields in (routes or {}).items()
        }
        self._pending: set[asyncio.Task[bool]] = set()

    def scope(self, request: GatewayRequest, route: Route) -> CacheScope | None:
        """How the cache sees this request; None when it does not apply at all."""
        config: CacheConfig = self._routes.get(route.name, self.cache.default)
        if not config.enabled or not cacheable(request.body, config):
            return None  # e.g. a sampled request (temperature above 0, no seed)
        if choice_count(request.body) > 1:
            return None  # n choices are n samples asked for now, not one answer kept
        directive = directive_from_headers(request.client_headers)
        if directive == "bypass":
            return None
        prompt = request.headers.get("X-Keel-Prompt")
        version = request.headers.get("X-Keel-Prompt-Version")
        return CacheScope(
            project_id=request.principal.project_id,
            route=route.name,
            route_identity=route.identity,
            config=config,
            directive=directive,
            prompt=f"{prompt}@{version}" if prompt and version else None,
        )

    async def lookup(self, request: GatewayRequest, scope: CacheScope) -> CacheHit | None:
        """Step 5; a `refresh` directive skips the lookup (and the answer is stored anew)."""
        trace = request.trace
        step = trace.begin("cache") if trace is not None else None
        hit = None if scope.directive == "refresh" else await self.cache.lookup(scope, request.body)
        if trace is not None and step is not None:
            trace.end(step)
            trace.cache = hit.header if hit is not None else "miss"
            if hit is not None:
                trace.saved_cost = hit.cost
                spent_ms = (time.time_ns() - trace.start_ns) / 1e6
                trace.saved_ms = max(0.0, hit.latency_ms - spent_ms)
        request.headers["X-Keel-Cache"] = hit.header if hit is not None else "miss"
        return hit

    def store_later(
        self,
        scope: CacheScope,
        request: GatewayRequest,
        response: dict[str, Any],
        cost: float | None,
        latency_ms: float,
    ) -> None:
        """Keep an answer without making the client wait (the task holds its own refs)."""
        task = asyncio.create_task(
            self.cache.store(scope, request.body, response, cost, latency_ms)
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for stores under way (tests, shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
