"""The bundled all-MiniLM-L6-v2, loaded offline from its package."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from keel.deploy.bundled import minilm_dir
from keel.embeddings.local import LocalEmbedder


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    return LocalEmbedder("all-minilm-l6-v2", minilm_dir())


async def test_paraphrase_ranks_above_an_unrelated_sentence(embedder: LocalEmbedder) -> None:
    loaded = embedder
    result = await loaded.embed(
        [
            "How do I reset my password?",
            "I forgot my password and need to change it.",
            "The recipe needs two cups of flour.",
        ]
    )
    vectors = result.vectors
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    paraphrase, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert paraphrase > unrelated + 0.3
    assert result.prompt_tokens > 20
    assert loaded.ready


async def test_loading_does_not_block_the_event_loop() -> None:
    fresh = LocalEmbedder("all-minilm-l6-v2", minilm_dir())
    fresh.start_loading()
    ticks = 0
    while not fresh.ready and fresh.error is None:
        await asyncio.sleep(0.01)
        ticks += 1
    assert fresh.ready
    assert ticks > 0  # the loop kept running while the model loaded
    fresh.close()


async def test_approximate_vectors_keep_their_meaning(embedder: LocalEmbedder) -> None:
    # Traffic insights embed with the faster path; its vectors must stay where the exact
    # ones are (knowledge indexes and queries use the exact ones).
    texts = ["what is the weather like in oslo", "reset my bank password", "ok", "x " * 80]
    exact = await embedder.embed(texts)
    approximate = await embedder.embed_approximate(texts)
    assert approximate.vectors.shape == exact.vectors.shape == (4, 384)
    assert np.min(np.sum(exact.vectors * approximate.vectors, axis=1)) >= 0.999
    assert approximate.prompt_tokens == exact.prompt_tokens
    # Each text's vector is its own, whatever order the batches ran in.
    alone = await embedder.embed([texts[2]])
    assert float(alone.vectors[0] @ exact.vectors[2]) > 0.9999
