"""Keel services wired to a fake upstream and a fake embedder, for fast in-process tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from keel.embeddings.base import EmbeddingResult
from keel.providers.openai_compat import OpenAICompatProvider
from keel.routing.table import Target
from keel.server import services as server_services
from keel.server.services import Services
from keel.settings import Settings
from keel.store import migrate
from keel.store.db import Database


class HashEmbedder:
    """Deterministic vectors from a hash: exercises the HTTP layer, proves nothing semantic."""

    name = "fake-embed"
    dimension = 8
    error: str | None = None
    ready = True

    def start_loading(self) -> None:
        pass

    async def embed(self, texts: list[str]) -> EmbeddingResult:
        rows = []
        for text in texts:
            digest = hashlib.sha256(text.encode()).digest()[: self.dimension]
            vector = np.frombuffer(digest, dtype=np.uint8).astype(np.float32) + 1
            rows.append(vector / np.linalg.norm(vector))
        return EmbeddingResult(np.stack(rows), prompt_tokens=sum(len(t.split()) for t in texts))

    def close(self) -> None:
        pass


def build_services(
    data_dir: Path, upstream_url: str, read_timeout: float = 2.0, **overrides: object
) -> tuple[Services, str]:
    """Services over SQLite in data_dir and one fake chat model; returns them and an admin key.
    `read_timeout` is short so that fault tests of a silent upstream are quick; load tests,
    whose upstream may wait its turn on a busy machine, give a longer one."""
    settings = Settings.model_validate(
        {"data_dir": data_dir, "local_model": False, "embeddings": False, **overrides}
    )
    database = Database(settings.effective_database_url)
    migrate.upgrade(database)
    services = server_services.build_services(settings, database)
    admin_key = services.keys.bootstrap_admin(data_dir)
    assert admin_key is not None
    services.keys.load_cache()
    provider = OpenAICompatProvider("fake", upstream_url, read_timeout=read_timeout)
    services.catalog.add_chat(Target("fake-model", provider, "upstream-model"))
    services.catalog.add_embedder(HashEmbedder())
    return services, admin_key
