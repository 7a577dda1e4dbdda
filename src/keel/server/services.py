"""Start and stop everything one gateway process runs: store, keys, registry, router,
local deployments, embeddings."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keel.auth.audit import AuditLog
from keel.auth.keys import KeyService
from keel.auth.secrets import SecretBox
from keel.cache.metrics import CacheMetrics
from keel.cache.service import ResponseCache, build_response_cache
from keel.deploy.bundled import minilm_dir
from keel.deploy.crashes import RestartPolicy
from keel.deploy.manager import DeploymentManager, ServerOptions
from keel.deploy.metrics import DeploymentMetrics
from keel.events import ChangeBus
from keel.gateway.pipeline import Gateway
from keel.guard.service import GuardService
from keel.knowledge.chunk import TokenCounter, lazy_counter, tokenizer_counter, whitespace_tokens
from keel.knowledge.service import KnowledgeBases
from keel.prompts.resolver import PromptResolver
from keel.prompts.service import PromptService
from keel.providers.plugins import ProviderConfig, ProviderPlugins
from keel.registry.catalog import ModelCatalog
from keel.registry.seed import seed_bundled_model
from keel.registry.service import RegistryService
from keel.routing.router import Router
from keel.routing.sync import RegistrySync
from keel.routing.table import RoutingTable, Target
from keel.server.access import (
    Access,
    build_access,
    register_metrics,
    start_access,
    stop_access,
)
from keel.server.access import readiness as access_readiness
from keel.settings import Settings
from keel.store import migrate
from keel.store.db import Database
from keel.tracing.service import Tracing

log = logging.getLogger("keel.server")

AdminKeyNotice = Callable[[str, Path], None]
Progress = Callable[[str], None]


def _minilm_tokens() -> TokenCounter:
    """Knowledge chunks are sized in MiniLM's own tokens (roughly, when it is not installed)."""
    from keel.deploy.bundled import BundledModelMissing

    try:
        return tokenizer_counter(Path(minilm_dir()) / "tokenizer.json")
    except (BundledModelMissing, OSError, ImportError):
        return whitespace_tokens


def log_admin_key(key: str, path: Path) -> None:
    log.warning("created the first admin key (shown once, saved to %s): %s", path, key)


@dataclass
class Services:
    settings: Settings
    database: Database
    keys: KeyService
    audit: AuditLog
    events: ChangeBus
    catalog: ModelCatalog
    registry: RegistryService
    router: Router
    deployments: DeploymentManager
    sync: RegistrySync
    gateway: Gateway
    tracing: Tracing
    access: Access
    cache: ResponseCache
    extras: dict[str, Any] = field(default_factory=dict)
    prompts: PromptService | None = None
    guard: GuardService | None = None

    def readiness(self) -> dict[str, dict[str, object]]:
        checks = self.deployments.readiness()
        for embedder in self.catalog.embedders:
            check: dict[str, object] = {
                "ready": embedder.ready,
                "state": "ready" if embedder.ready else ("failed" if embedder.error else "loading"),
            }
            runtime = getattr(embedder, "runtime", None)  # the bundled model says what runs it
            if embedder.ready and runtime is not None:
                check["runtime"] = runtime
            checks[f"embeddings:{embedder.name}"] = check
        checks.update(access_readiness(self.access))
        checks["cache"] = {"ready": True, **self.cache.status()}  # a broken cache is a miss
        return checks

    def chat_model_cards(self, project_id: str) -> list[dict[str, Any]]:
        created = self.catalog.created
        return [
            {"id": name, "object": "model", "created": created, "owned_by": "keel"}
            for name in self.router.table.names(project_id)
        ]


def build_services(
    settings: Settings, database: Database, *, progress: Progress | None = None
) -> Services:
    """Wire the services together (no I/O beyond reading the secret key file and the
    installed packages' entry points)."""
    access = build_access(settings, database)
    events = access.events
    # Provider kinds, Keel's own included, come from installed `keel.providers` entry points.
    plugins = ProviderPlugins.load()
    registry = RegistryService(
        database, SecretBox.load(settings.data_dir, settings.secret_key), events, plugins
    )
    catalog = ModelCatalog()
    for upstream in settings.upstreams:
        provider = plugins.create(
            "openai_compat",
            ProviderConfig(
                name=upstream.name,
                base_url=upstream.base_url,
                api_key=upstream.api_key,
                connect_timeout=settings.upstream_connect_timeout,
                read_timeout=settings.upstream_timeout,
            ),
        )
        for model in upstream.models:
            catalog.add_chat(Target(model, provider, model))
    router = Router(failure_threshold=settings.breaker_failures, cooldown=settings.breaker_cooldown)
    router.table = RoutingTable(static=catalog.static)  # until the registry is read
    deployments = DeploymentManager(
        ServerOptions(
            data_dir=settings.data_dir,
            n_ctx=settings.local_model_ctx,
            n_threads=settings.local_model_threads,
            ready_timeout=settings.local_model_ready_timeout,
            connect_timeout=settings.upstream_connect_timeout,
            read_timeout=settings.upstream_timeout,
            restart=RestartPolicy(
                backoff=settings.local_model_restart_backoff,
                backoff_max=settings.local_model_restart_backoff_max,
                crashloop_crashes=settings.local_model_crashloop_crashes,
                crashloop_window=settings.local_model_crashloop_window,
            ),
            logs_kept=settings.local_model_logs_kept,
            ray_address=settings.ray_address,
        ),
        progress=progress,
        replica_client=plugins.get("openai_compat").factory,
    )
    sync = RegistrySync(
        registry,
        router,
        deployments,
        catalog.static,
        plugins=plugins,
        connect_timeout=settings.upstream_connect_timeout,
        read_timeout=settings.upstream_timeout,
    )
    keys = access.keys
    prompts = PromptService(database, events)
    # Semantic lookups use the first embedder served (the bundled MiniLM unless disabled).
    cache = build_response_cache(settings, lambda: next(iter(catalog.embedders), None))
    guard = GuardService(
        database, events, default_policy=settings.guard_policy, declared=settings.guard_policies
    )
    tracing = Tracing(settings, database, router.breaker_states)
    knowledge = KnowledgeBases(
        database,
        settings.data_dir,
        lambda: next(iter(catalog.embedders), None),
        lazy_counter(_minilm_tokens),
        events=events,
    )
    return Services(
        settings=settings,
        database=database,
        keys=keys,
        audit=AuditLog(database),
        events=events,
        catalog=catalog,
        registry=registry,
        router=router,
        deployments=deployments,
        sync=sync,
        gateway=Gateway(
            catalog,
            router,
            tracing=tracing,
            prompts=PromptResolver(prompts, events),
            admission=access.admission,
            guard=guard,
            cache=cache,
            cache_routes=settings.cache_routes,
            embedding_max_inputs=settings.embedding_max_inputs,
            knowledge=knowledge,
        ),
        tracing=tracing,
        access=access,
        cache=cache,
        prompts=prompts,
        guard=guard,
        extras={"knowledge": knowledge},
    )


async def start_services(
    settings: Settings,
    *,
    on_admin_key: AdminKeyNotice = log_admin_key,
    progress: Progress | None = None,
) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.effective_database_url)
    await asyncio.to_thread(migrate.upgrade, database)
    services = build_services(settings, database, progress=progress)
    new_key = await asyncio.to_thread(services.keys.bootstrap_admin, settings.data_dir)
    if new_key:
        on_admin_key(new_key, settings.data_dir / "admin.key")
    await asyncio.to_thread(services.keys.load_cache)
    try:
        await start_access(services.access)
        register_metrics(services.access, services.tracing.metrics.registry)
        services.tracing.metrics.registry.register(CacheMetrics(services.cache))
        services.tracing.metrics.registry.register(DeploymentMetrics(services.deployments))
        if settings.local_model:
            await asyncio.to_thread(seed_bundled_model, services.registry, settings)
        if settings.embeddings:
            from keel.embeddings.local import LocalEmbedder  # numpy and torch only when used

            embedder = LocalEmbedder(settings.embedding_model_name, minilm_dir(),
                                     threads=settings.embedding_threads or None,
                                     background_priority=settings.insights_priority,
                                     background_process=settings.insights_process,
                                     background_threads=settings.insights_threads)  # fmt: skip
            services.catalog.add_embedder(embedder)
            embedder.start_loading()
        services.sync.attach(services.events)
        if services.guard is not None:  # policies in use are built (and their models loaded)
            await asyncio.to_thread(services.guard.check_declared)
            await asyncio.to_thread(services.guard.reload)
            await asyncio.to_thread(services.guard.warm_up)
        services.tracing.start_writer()  # also replays spill files left by an earlier run
        started = await services.sync.refresh()
        await asyncio.gather(*started)
        from keel.server.admin.workflows import build_workflows  # imports this module

        workflows = build_workflows(services)
        services.extras["workflows"] = workflows
        workflows.start()  # resumes runs a stopped process left, in the background
    except BaseException:
        await stop_services(services)
        raise
    return services


async def stop_services(services: Services) -> None:
    workflows = services.extras.get("workflows")
    if workflows is not None:
        await workflows.close()  # runs stop between steps; their checkpoints stay
    await services.tracing.close()  # flush queued traces to the store, else to the spill file
    await services.sync.close()
    await stop_access(services.access)
    await services.cache.close()
    for provider in services.catalog.providers:
        await provider.close()
    for embedder in services.catalog.embedders:
        embedder.close()
    await services.deployments.stop_all()
    services.database.dispose()
