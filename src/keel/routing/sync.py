"""Keep the router's table and the local deployments in step with the registry.

A change event (from this process now; from Redis with several replicas) schedules one
refresh on the event loop: read a snapshot in a worker thread, reconcile deployments,
build a new table, swap it in. Bursts of changes coalesce into one refresh.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from keel.deploy.manager import DeploymentManager, Wanted, resolve_model_path
from keel.errors import ServiceUnavailable
from keel.events import Change, ChangeBus
from keel.providers.anthropic import AnthropicProvider
from keel.providers.base import Operation, Provider, ProviderResponse, ProviderStream, Usage
from keel.providers.openai_compat import OpenAICompatProvider
from keel.registry.service import TOPIC, RegistryService, Snapshot
from keel.registry.tables import ModelVersionRow, ProviderRow
from keel.routing.router import Router
from keel.routing.table import Route, RoutingTable, Target

log = logging.getLogger("keel.routing")


class NotDeployed:
    """Stands in for a local model version that has no running deployment."""

    def __init__(self, ref: str):
        self.name = ref

    def _fail(self) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"{self.name} runs on a local provider but is not deployed; "
            f"start it with 'keel deploy {self.name}'"
        )

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
        connect_timeout: float = 5.0,
        read_timeout: float = 600.0,
    ):
        self._registry = registry
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
        self, snapshot: Snapshot, providers: dict[tuple[str, str], ProviderRow]
    ) -> list[Wanted]:
        models = {(m.project_id, f"{m.name}@{m.version}"): m for m in snapshot.models}
        wanted = []
        for deployment in snapshot.deployments:
            model = models.get((deployment.project_id, deployment.model))
            if model is None:
                continue
            provider = providers.get((model.project_id, model.provider))
            if provider is None or provider.kind != "local":
                continue
            wanted.append(
                Wanted(
                    project_id=deployment.project_id,
                    ref=deployment.model,
                    model_path=resolve_model_path(str(provider.config.get("model_path", ""))),
                    upstream_model=model.upstream_model,
                    replicas=deployment.replicas,
                )
            )
        return wanted

    def _client(self, row: ProviderRow) -> Provider:
        """One pooled client per provider configuration, reused across refreshes."""
        api_key = self._registry.api_key(row)
        fingerprint = hashlib.sha256(
            f"{row.project_id}|{row.name}|{row.kind}|{row.base_url}|{api_key}".encode()
        ).hexdigest()
        client = self._clients.get(fingerprint)
        if client is None:
            client = self._make_client(row, api_key)
            self._clients[fingerprint] = client
        return client

    def _make_client(self, row: ProviderRow, api_key: str | None) -> Provider:
        assert row.base_url is not None
        if row.kind == "anthropic":
            return AnthropicProvider(
                row.name, row.base_url, api_key=api_key,
                connect_timeout=self._connect_timeout, read_timeout=self._read_timeout,
            )  # fmt: skip
        return OpenAICompatProvider(
            row.name, row.base_url, api_key=api_key,
            connect_timeout=self._connect_timeout, read_timeout=self._read_timeout,
        )  # fmt: skip

    def _target(
        self, model: ModelVersionRow, providers: dict[tuple[str, str], ProviderRow]
    ) -> Target | None:
        ref = f"{model.name}@{model.version}"
        row = providers.get((model.project_id, model.provider))
        if row is None:
            return None
        provider: Provider
        if row.kind == "local":
            provider = self._deployments.pool(model.project_id, ref) or NotDeployed(ref)
        else:
            provider = self._client(row)
        return Target(
            ref=ref,
            provider=provider,
            upstream_model=model.upstream_model,
            defaults=dict(model.params),
            input_price_per_m=model.input_price_per_m,
            output_price_per_m=model.output_price_per_m,
        )

    def _build(
        self, snapshot: Snapshot, providers: dict[tuple[str, str], ProviderRow]
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
        for row in snapshot.routes:
            spec = row.spec
            weighted = tuple(
                (versions[(row.project_id, ref)], int(weight))
                for ref, weight in spec["targets"].items()
                if (row.project_id, ref) in versions
            )
            if not weighted:
                continue
            routes[(row.project_id, row.name)] = Route(
                name=row.name,
                weighted=weighted,
                sticky=spec.get("sticky"),
                fallbacks=tuple(
                    versions[(row.project_id, ref)]
                    for ref in spec.get("fallbacks", [])
                    if (row.project_id, ref) in versions
                ),
                timeout=spec.get("timeout"),
                retries=int(spec.get("retries", 2)),
            )
        return RoutingTable(routes=routes, versions=versions, latest=latest, static=self._static)

    async def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
        for client in self._clients.values():
            await client.close()
