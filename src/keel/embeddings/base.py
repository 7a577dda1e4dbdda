"""The Embedder protocol: turns texts into unit vectors of a fixed dimension."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # numpy loads only where embeddings are served
    import numpy as np
    import numpy.typing as npt


@dataclass(frozen=True)
class EmbeddingResult:
    vectors: npt.NDArray[np.float32]
    prompt_tokens: int


class Embedder(Protocol):
    name: str
    dimension: int
    error: str | None

    @property
    def ready(self) -> bool: ...

    def start_loading(self) -> None: ...

    async def embed(self, texts: list[str]) -> EmbeddingResult: ...

    def close(self) -> None: ...


@runtime_checkable
class ApproximateEmbedder(Protocol):
    """An embedder that can also give vectors close to embed()'s (cosine >= 0.999) faster:
    good enough to group and compare traffic, never for vectors an index keeps."""

    async def embed_approximate(self, texts: list[str]) -> EmbeddingResult: ...


@runtime_checkable
class BackgroundEmbedder(Protocol):
    """An embedder with a worker for work no request waits on: embed_approximate()'s
    vectors, computed at a CPU priority that yields to the request path."""

    async def embed_background(self, texts: list[str]) -> EmbeddingResult: ...
