from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from keel.cache.config import CacheConfig, CacheScope
from keel.deploy.bundled import minilm_dir
from keel.embeddings.base import EmbeddingResult
from keel.embeddings.local import LocalEmbedder


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class WordEmbedder:
    """Bag-of-words vectors: texts with the same words match exactly, others hardly.

    Enough to drive the semantic path deterministically; the real model is tested apart.
    """

    dimension = 64
    error: str | None = None
    ready = True

    def __init__(self, name: str = "words-v1"):
        self.name = name
        self.calls = 0

    def start_loading(self) -> None:
        pass

    async def embed(self, texts: list[str]) -> EmbeddingResult:
        self.calls += 1
        rows = []
        for text in texts:
            vector = np.zeros(self.dimension, dtype=np.float32)
            for word in text.lower().replace("?", " ").split():
                vector[hash(word) % self.dimension] += 1.0
            rows.append(vector / max(float(np.linalg.norm(vector)), 1e-9))
        return EmbeddingResult(np.stack(rows), prompt_tokens=len(texts))

    def close(self) -> None:
        pass


class LoadingEmbedder(WordEmbedder):
    """Not ready until `loaded` is set; embed() waits for it, as the local model does."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.loaded = asyncio.Event()
        self.fail = fail
        self.ready = False

    async def embed(self, texts: list[str]) -> EmbeddingResult:
        await self.loaded.wait()
        if self.fail:
            raise RuntimeError("model files missing")
        self.ready = True
        return await super().embed(texts)


def body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "chat", "temperature": 0,
            "messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": text}], **extra}  # fmt: skip


def answer(text: str = "Paris.") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "chat",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
    }


def scope(project: str = "p1", route: str = "chat", **config: Any) -> CacheScope:
    directive = config.pop("directive", "normal")
    prompt = config.pop("prompt", None)
    return CacheScope(project, route, f"{route}@rev1", CacheConfig(**config), directive, prompt)


@pytest.fixture(scope="session")
def minilm() -> Iterator[LocalEmbedder]:
    embedder = LocalEmbedder("all-minilm-l6-v2", minilm_dir())
    yield embedder
    embedder.close()
