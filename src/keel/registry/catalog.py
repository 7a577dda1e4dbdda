"""The model catalog: model ids clients may send, and the provider behind each.

Built at start from settings (the bundled models and configured upstreams); the
versioned registry with aliases and canaries replaces its source, not its interface.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from keel.embeddings.base import Embedder
from keel.errors import InvalidRequest, NotFound
from keel.providers.base import Provider


@dataclass(frozen=True)
class ChatTarget:
    model_id: str
    provider: Provider
    upstream_model: str
    owned_by: str
    defaults: dict[str, Any] = field(default_factory=dict)


class ModelCatalog:
    def __init__(self) -> None:
        self._chat: dict[str, ChatTarget] = {}
        self._embedders: dict[str, Embedder] = {}
        self._created = int(time.time())

    def add_chat(self, target: ChatTarget) -> None:
        self._check_free(target.model_id)
        self._chat[target.model_id] = target

    def add_embedder(self, embedder: Embedder) -> None:
        self._check_free(embedder.name)
        self._embedders[embedder.name] = embedder

    def _check_free(self, model_id: str) -> None:
        if model_id in self._chat or model_id in self._embedders:
            raise ValueError(f"model id {model_id!r} is configured twice; give each a unique id")

    @property
    def known(self) -> list[str]:
        return sorted([*self._chat, *self._embedders])

    def _unknown(self, model: str) -> NotFound:
        return NotFound(
            f"unknown model {model!r} (known: {', '.join(self.known) or 'none'}); "
            "list them with GET /v1/models or 'keel models list'",
            param="model",
            code="model_not_found",
        )

    def resolve_chat(self, model: str) -> ChatTarget:
        target = self._chat.get(model)
        if target is not None:
            return target
        if model in self._embedders:
            raise InvalidRequest(
                f"model {model!r} is an embedding model; send it to /v1/embeddings",
                param="model",
            )
        raise self._unknown(model)

    def resolve_embedder(self, model: str) -> Embedder:
        embedder = self._embedders.get(model)
        if embedder is not None:
            return embedder
        if model in self._chat:
            raise InvalidRequest(
                f"model {model!r} is a chat model; it has no embeddings "
                f"(embedding models: {', '.join(sorted(self._embedders)) or 'none'})",
                param="model",
            )
        raise self._unknown(model)

    def cards(self) -> list[dict[str, Any]]:
        cards = [
            {"id": t.model_id, "object": "model", "created": self._created, "owned_by": t.owned_by}
            for t in self._chat.values()
        ]
        cards += [
            {"id": name, "object": "model", "created": self._created, "owned_by": "keel"}
            for name in self._embedders
        ]
        return sorted(cards, key=lambda card: card["id"])

    @property
    def providers(self) -> list[Provider]:
        unique: dict[int, Provider] = {id(t.provider): t.provider for t in self._chat.values()}
        return list(unique.values())

    @property
    def embedders(self) -> list[Embedder]:
        return list(self._embedders.values())
