"""Keep the router's table and the local deployments in step with the registry.

A change event (from this process now; from Redis with several replicas) schedules one
refresh on the event loop: read a snapshot in a worker thread, reconcile deployments,
build a new table, swap it in. Bursts of changes coalesce into one refresh.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import socket
from typing import Any

from keel.deploy.manager import DeploymentManager, Wanted, resolve_model_path
from keel.errors import ServiceUnavailable
from keel.events import Change, ChangeBus
from keel.providers.base import Operation, Provider, ProviderResponse, ProviderStream, Usage
from keel.providers.plugins import (
    HOW_TO_ADD,
    LOCAL_KIND,
    ProviderConfig,
    ProviderPlugins,
    UnknownProviderKind,
)
from keel.registry.service import TOPIC, RegistryService
from keel.registry.snapshot import ModelVersionEntry, ProviderEntry, Snapshot
from keel.routing.router import Router
from keel.routing.table import Route, RoutingTable, Target

log = logging.getLogger("keel.routing")


class Unavailable:
    """Stands in for a model version that cannot be served now, and answers why."""

    def __init__(self, name: str, why: str):
        self.name = name
        self._why = why

    def _fail(self) -> ServiceUnavailable:
        return ServiceUnavailable(self._why)

    async def send(self, op: Operation, payload: dict[str, Any]) -> ProviderResponse:
        raise self._fail()

    async def open_stream(self, op: Operation, payload: dict[str, Any]) -> ProviderStream:
        raise self._fail()

    async def count_usage(self, op: Operation, payload: dict[str, Any], output_text: str) -> Usage:
        raise self._fail()

    async def close(self) -> None:
        pass


class RegistrySync:
    def __init__(
        self,
        registry: RegistryService,
        router: Router,
        deployments: DeploymentManager,
        static: dict[str, Target],
        *,
        plugins: ProviderPlugins,
        connect_timeout: float = 5.0,
        read_timeout: float = 600.0,
    ):
        self._registry = registry
        self._plugins = plugins
        self._router = router
        self._deployments = deployments
        self._static = static
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._clients: dict[str, Provider] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: asyncio.Task[None] | None = None
        self._again = False

    def attach(self, events: ChangeBus) -> None:
        """Subscribe to registry changes; call from the event loop that serves requests."""
        self._loop = asyncio.get_running_loop()
        events.subscribe(TOPIC, self._on_change)

    def _on_change(self, _change: Change) -> None:
        # Called from whichever thread committed the change.
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._schedule)

    def _schedule(self) -> None:
        if self._pending is not None and not self._pending.done():
            self._again = True
            return
        self._pending = asyncio.create_task(self._refresh_loop())

    async def _refresh_loop(self) -> None:
        while True:
            self._again = False
            try:
                await self.refresh()
            except Exception:  # the old table keeps serving; the next change retries
                log.exception("refreshing the routing table failed")
            if not self._again:
                return

    async def refresh(self) -> list[asyncio.Task[None]]:
        """Rebuild the table from the registry; returns replica start-up tasks begun."""
        snapshot = await asyncio.to_thread(self._registry.snapshot)
        providers = {(p.project_id, p.name): p for p in snapshot.providers}
        started = await self._deployments.reconcile(self._wanted(snapshot, providers))
        self._router.table = self._build(snapshot, providers)
        return started

    def _wanted(
        self, snapshot: Snapshot, providers: dict[tuple[str, str], ProviderEntry]
    ) -> list[Wanted]:
        models = {(m.project_id, m.ref): m for m in snapshot.models}
        wanted = []
        for deployment in snapshot.deployments:
            model = models.get((deployment.project_id, deployment.model))
            if model is None:
                continue
            provider = providers.get((model.project_id, model.provider))
            if provider is None or provider.kind != LOCAL_KIND:
                continue
            wanted.append(
                Wanted(
                    project_id=deployment.project_id,
                    ref=deployment.model,
                    model_path=resolve_model_path(str(provider.config.get("model_path", ""))),
                    upstream_model=model.upstream_model,
                    replicas=deployment.replicas,
                    on=deployment.on,
                )
            )
        return wanted

    def _client(self, entry: ProviderEntry) -> Provider:
        """One pooled client per provider configuration, reused across refreshes.

        A kind no plugin provides, or a factory that fails, makes a stand-in that answers
        503 with the cause: the other providers' routes keep refreshing and serving.
        """
        options = json.dumps(dict(entry.config), sort_keys=True, default=str)
        fingerprint = hashlib.sha256(
            f"{entry.project_id}|{entry.name}|{entry.kind}|{entry.base_url}|{entry.api_key}|"
            f"{options}".encode()
        ).hexdigest()
        client = self._clients.get(fingerprint)
        if client is not None:
            return client
        if entry.api_key_env is not None and entry.api_key is None:
            host = socket.gethostname()
            why = (f"provider {entry.name!r} reads its key from the environment variable "
                   f"{entry.api_key_env}, which is not set on this Keel server ({host}); "
                   "set it where 'keel serve' runs and restart")  # fmt: skip
            log.error("%s", why)
            return Unavailable(entry.name, why)
        config = ProviderConfig(
            name=entry.name,
            base_url=entry.base_url,
            api_key=entry.api_key,
            connect_timeout=self._connect_timeout,
            read_timeout=self._read_timeout,
            options=entry.config,
        )
        try:
            client = self._plugins.create(entry.kind, config)
        except UnknownProviderKind as exc:
            why = (f"provider {entry.name!r} is of kind {entry.kind!r}, which no installed "
                   f"plugin provides (known: {', '.join(exc.known)}); {HOW_TO_ADD}")  # fmt: skip
            log.error("%s", why)
            return Unavailable(entry.name, why)
        except Exception as exc:  # plugin code: any failure is this provider's alone
            why = (f"provider {entry.name!r} (kind {entry.kind}) could not be set up: {exc}; "
                   f"fix it with PUT /api/providers/{entry.name} or keel apply")  # fmt: skip
            log.exception("%s", why)
            return Unavailable(entry.name, why)
        self._clients[fingerprint] = client
        return client

    def _target(
        self, model: ModelVersionEntry, providers: dict[tuple[str, str], ProviderEntry]
    ) -> Target | None:
        ref = model.ref
        entry = providers.get((model.project_id, model.provider))
        if entry is None:
            return None
        provider: Provider
        if entry.kind == LOCAL_KIND:
            pool = self._deployments.pool(model.project_id, ref)
            provider = pool or Unavailable(
                ref, f"{ref} runs on a local provider but is not deployed; "
                f"start it with 'keel deploy {ref}'",
            )  # fmt: skip
        else:
            provider = self._client(entry)
        return Target(
            ref=ref,
            provider=provider,
            upstream_model=model.upstream_model,
            defaults=dict(model.params),
            input_price_per_m=model.input_price_per_m,
            output_price_per_m=model.output_price_per_m,
        )

    def _build(
        self, snapshot: Snapshot, providers: dict[tuple[str, str], ProviderEntry]
    ) -> RoutingTable:
        versions: dict[tuple[str, str], Target] = {}
        latest: dict[tuple[str, str], Target] = {}
        newest: dict[tuple[str, str], int] = {}
        for model in snapshot.models:
            target = self._target(model, providers)
            if target is None:
                continue
            versions[(model.project_id, target.ref)] = target
            key = (model.project_id, model.name)
            if model.version > newest.get(key, 0):
                newest[key] = model.version
                latest[key] = target
        routes: dict[tuple[str, str], Route] = {}
        for route in snapshot.routes:
            project = route.project_id
            weighted = tuple(
                (versions[(project, ref)], weight)
                for ref, weight in route.targets.items()
                if (project, ref) in versions
            )
            if not weighted:
                continue
            routes[(project, route.name)] = Route(
                name=route.name,
                weighted=weighted,
                sticky=route.sticky,
                fallbacks=tuple(
                    versions[(project, ref)]
                    for ref in route.fallbacks
                    if (project, ref) in versions
                ),
                timeout=route.timeout,
                retries=route.retries,
                breaker_failures=route.breaker_failures,
                breaker_cooldown=route.breaker_cooldown,
            )
        return RoutingTable(routes=routes, versions=versions, latest=latest, static=self._static)

    async def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
        for client in self._clients.values():
            await client.close()
