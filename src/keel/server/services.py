"""Start and stop everything one gateway process runs: store, keys, model servers, catalog."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from keel.auth.audit import AuditLog
from keel.auth.keys import KeyService
from keel.deploy.bundled import minilm_dir, smollm2_gguf
from keel.deploy.llamacpp import LlamaCppServer, LlamaServerConfig
from keel.deploy.tokens import GGUFTokenCounter
from keel.embeddings.local import LocalEmbedder
from keel.events import ChangeBus, LocalChangeBus
from keel.gateway.pipeline import Gateway
from keel.providers.openai_compat import OpenAICompatProvider
from keel.registry.catalog import ChatTarget, ModelCatalog
from keel.settings import Settings
from keel.store import migrate
from keel.store.db import Database

log = logging.getLogger("keel.server")

AdminKeyNotice = Callable[[str, Path], None]
Progress = Callable[[str], None]

# A 135M model rambles until the context is full; cap it unless the client says otherwise.
LOCAL_DEFAULT_MAX_TOKENS = 512


def log_admin_key(key: str, path: Path) -> None:
    log.warning("created the first admin key (shown once, saved to %s): %s", path, key)


@dataclass
class Services:
    settings: Settings
    database: Database
    keys: KeyService
    catalog: ModelCatalog
    gateway: Gateway
    audit: AuditLog
    events: ChangeBus = field(default_factory=LocalChangeBus)
    model_servers: list[LlamaCppServer] = field(default_factory=list)

    def readiness(self) -> dict[str, dict[str, object]]:
        checks: dict[str, dict[str, object]] = {}
        for server in self.model_servers:
            checks[f"model_server:{server.config.model_alias}"] = {
                "ready": server.ready,
                "state": server.state,
                "restarts": server.restarts,
            }
        for embedder in self.catalog.embedders:
            checks[f"embeddings:{embedder.name}"] = {
                "ready": embedder.ready,
                "state": "ready" if embedder.ready else ("failed" if embedder.error else "loading"),
            }
        return checks


async def start_services(
    settings: Settings,
    *,
    on_admin_key: AdminKeyNotice = log_admin_key,
    progress: Progress | None = None,
) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.effective_database_url)
    await asyncio.to_thread(migrate.upgrade, database)
    keys = KeyService(database)
    new_key = await asyncio.to_thread(keys.bootstrap_admin, settings.data_dir)
    if new_key:
        on_admin_key(new_key, settings.data_dir / "admin.key")
    await asyncio.to_thread(keys.load_cache)

    catalog = ModelCatalog()
    services = Services(settings, database, keys, catalog, Gateway(catalog), AuditLog(database))
    try:
        if settings.local_model:
            await _start_local_model(services, progress)
        for upstream in settings.upstreams:
            provider = OpenAICompatProvider(
                upstream.name,
                upstream.base_url,
                api_key=upstream.api_key,
                connect_timeout=settings.upstream_connect_timeout,
                read_timeout=settings.upstream_timeout,
            )
            for model in upstream.models:
                catalog.add_chat(ChatTarget(model, provider, model, owned_by=upstream.name))
        if settings.embeddings:
            embedder = LocalEmbedder(settings.embedding_model_name, minilm_dir())
            catalog.add_embedder(embedder)
            embedder.start_loading()
    except BaseException:
        await stop_services(services)
        raise
    return services


async def _start_local_model(services: Services, progress: Progress | None) -> None:
    settings = services.settings
    model_path = settings.local_model_path or smollm2_gguf()
    server = LlamaCppServer(
        LlamaServerConfig(
            model_path=model_path,
            model_alias=settings.local_model_name,
            log_path=settings.data_dir / "logs" / "llama-server.log",
            n_ctx=settings.local_model_ctx,
            n_threads=settings.local_model_threads,
            ready_timeout=settings.local_model_ready_timeout,
        ),
        progress=progress,
    )
    services.model_servers.append(server)
    await server.start()
    provider = OpenAICompatProvider(
        "local",
        server.base_url,
        connect_timeout=settings.upstream_connect_timeout,
        read_timeout=settings.upstream_timeout,
        token_counter=GGUFTokenCounter(model_path),
    )
    services.catalog.add_chat(
        ChatTarget(
            settings.local_model_name,
            provider,
            settings.local_model_name,
            owned_by="keel-local",
            defaults={"max_tokens": LOCAL_DEFAULT_MAX_TOKENS},
        )
    )


async def stop_services(services: Services) -> None:
    for provider in services.catalog.providers:
        await provider.close()
    for embedder in services.catalog.embedders:
        embedder.close()
    for server in services.model_servers:
        await server.stop()
    services.database.dispose()
