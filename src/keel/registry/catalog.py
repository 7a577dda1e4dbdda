"""Models that live outside the registry: embedders and static chat targets from settings.

Chat models in the registry are found through the router; this catalog holds what is
configured in settings (upstreams) and the embedding models served in-process.
"""

from __future__ import annotations

import time
from typing import Any

from keel.embeddings.base import Embedder
from keel.errors import InvalidRequest, NotFound
from keel.routing.table import Target


class ModelCatalog:
    def __init__(self) -> None:
        self.static: dict[str, Target] = {}
        self._embedders: dict[str, Embedder] = {}
        self.created = int(time.time())

    def add_chat(self, target: Target) -> None:
        self._check_free(target.ref)
        self.static[target.ref] = target

    def add_embedder(self, embedder: Embedder) -> None:
        self._check_free(embedder.name)
        self._embedders[embedder.name] = embedder

    def _check_free(self, model_id: str) -> None:
        if model_id in self.static or model_id in self._embedders:
            raise ValueError(f"model id {model_id!r} is configured twice; give each a unique id")

    def is_embedder(self, model: str) -> bool:
        return model in self._embedders

    def reject_embedder_for_chat(self, model: str) -> None:
        if model in self._embedders:
            raise InvalidRequest(
                f"model {model!r} is an embedding model; send it to /v1/embeddings",
                param="model",
            )

    def resolve_embedder(self, model: str, chat_models: list[str]) -> Embedder:
        embedder = self._embedders.get(model)
        if embedder is not None:
            return embedder
        embedding_models = ", ".join(sorted(self._embedders)) or "none"
        if model in chat_models:
            raise InvalidRequest(
                f"model {model!r} is a chat model; it has no embeddings "
                f"(embedding models: {embedding_models})",
                param="model",
            )
        raise NotFound(
            f"unknown embedding model {model!r} (known: {embedding_models}); "
            "list models with GET /v1/models",
            param="model",
            code="model_not_found",
        )

    def embedding_cards(self) -> list[dict[str, Any]]:
        return [
            {"id": name, "object": "model", "created": self.created, "owned_by": "keel"}
            for name in sorted(self._embedders)
        ]

    @property
    def providers(self) -> list[Any]:
        unique = {id(t.provider): t.provider for t in self.static.values()}
        return list(unique.values())

    @property
    def embedders(self) -> list[Embedder]:
        return list(self._embedders.values())
