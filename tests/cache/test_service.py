from __future__ import annotations

from typing import Any

import pytest

from keel.cache.base import Entry, Outcome
from keel.cache.memory import MemoryBackend
from keel.cache.service import ResponseCache, cache_header
from keel.embeddings.local import LocalEmbedder
from tests.cache.conftest import Clock, LoadingEmbedder, WordEmbedder, answer, body, scope


def make(embedder: Any = None, clock: Clock | None = None, **limits: int) -> ResponseCache:
    clock = clock or Clock()
    backend = MemoryBackend(limits.get("entries", 1000), limits.get("bytes", 10**7), clock=clock)
    return ResponseCache(backend, (lambda: embedder) if embedder else None, clock=clock)


async def test_exact_hit_returns_the_stored_answer_with_its_cost_and_latency() -> None:
    cache = make()
    assert await cache.lookup(scope(), body("Capital of France?")) is None
    assert await cache.store(scope(), body("Capital of France?"), answer(), 0.002, 850.0)
    hit = await cache.lookup(scope(), body("Capital of France?", stream=True, user="u1"))
    assert hit is not None
    assert (hit.kind, hit.similarity, hit.cost, hit.latency_ms) == ("exact", 1.0, 0.002, 850.0)
    assert hit.response == answer()
    assert cache_header(hit) == "hit-exact"
    assert cache_header(None) == "miss"
    hit.response["model"] = "changed by the caller"  # a fresh copy each time
    again = await cache.lookup(scope(), body("Capital of France?"))
    assert again is not None
    assert again.response["model"] == "chat"
    stats = await cache.stats("p1")
    assert (stats["entries"], stats["hits_exact"], stats["misses"]) == (1, 2, 1)


async def test_sampled_requests_are_not_cached() -> None:
    cache = make()
    sampled = {**body("Write a poem."), "temperature": 0.9}
    assert not await cache.store(scope(), sampled, answer(), None, 1.0)
    assert await cache.lookup(scope(), sampled) is None
    assert (await cache.stats("p1"))["entries"] == 0
    seeded = {**sampled, "seed": 7}
    assert await cache.store(scope(), seeded, answer(), None, 1.0)
    assert await cache.lookup(scope(), seeded) is not None


async def test_the_same_prompt_from_two_projects_never_shares_an_entry() -> None:
    cache = make(WordEmbedder())
    both = {"mode": "both"}
    await cache.store(scope("tenant-a", **both), body("Capital of France?"), answer("A"), None, 1)
    assert await cache.lookup(scope("tenant-b", **both), body("Capital of France?")) is None
    await cache.store(scope("tenant-b", **both), body("Capital of France?"), answer("B"), None, 1)
    hit_a = await cache.lookup(scope("tenant-a", **both), body("Capital of France?"))
    hit_b = await cache.lookup(scope("tenant-b", **both), body("Capital of France?"))
    assert hit_a is not None
    assert hit_b is not None
    assert hit_a.entry_id != hit_b.entry_id
    assert hit_a.response["choices"][0]["message"]["content"] == "A"
    assert hit_b.response["choices"][0]["message"]["content"] == "B"
    assert await cache.purge("tenant-a") == 1
    assert await cache.lookup(scope("tenant-b"), body("Capital of France?")) is not None


async def test_ttl_from_the_route_config() -> None:
    clock = Clock()
    cache = make(clock=clock)
    await cache.store(scope(ttl_s=30), body("q"), answer(), None, 1.0)
    clock.now += 29
    assert await cache.lookup(scope(), body("q")) is not None
    clock.now += 2
    assert await cache.lookup(scope(), body("q")) is None


async def test_bypass_skips_the_cache_and_refresh_overwrites_it() -> None:
    cache = make()
    await cache.store(scope(), body("q"), answer("old"), None, 1.0)
    assert await cache.lookup(scope(directive="bypass"), body("q")) is None
    assert not await cache.store(scope(directive="bypass"), body("q"), answer("x"), None, 1.0)
    assert await cache.lookup(scope(directive="refresh"), body("q")) is None
    assert await cache.store(scope(directive="refresh"), body("q"), answer("new"), None, 1.0)
    hit = await cache.lookup(scope(), body("q"))
    assert hit is not None
    assert hit.response["choices"][0]["message"]["content"] == "new"


async def test_incomplete_or_failed_answers_are_not_stored() -> None:
    cache = make()
    cut = answer()
    cut["choices"][0]["finish_reason"] = None
    assert not await cache.store(scope(), body("q"), cut, None, 1.0)
    assert not await cache.store(scope(), body("q"), {"error": {"message": "x"}}, None, 1.0)


async def test_purge_by_route_prompt_and_entry() -> None:
    cache = make()
    await cache.store(scope(route="chat", prompt="support@3"), body("a"), answer(), None, 1)
    await cache.store(scope(route="chat", prompt="support@4"), body("b"), answer(), None, 1)
    await cache.store(scope(route="search"), body("c"), answer(), None, 1)
    await cache.store(scope(route="search"), body("d"), answer(), None, 1)
    assert await cache.purge("p1", prompt="support@3") == 1
    assert await cache.lookup(scope(route="chat"), body("b")) is not None
    assert await cache.purge("p1", route="chat") == 1
    hit = await cache.lookup(scope(route="search"), body("c"))
    assert hit is not None
    assert await cache.purge("p1", entry_id=hit.entry_id) == 1
    assert await cache.lookup(scope(route="search"), body("c")) is None
    assert await cache.lookup(scope(route="search"), body("d")) is not None


async def test_semantic_hit_needs_the_same_context_and_embedding_model() -> None:
    words = WordEmbedder("words-v1")
    cache = make(words)
    semantic = {"mode": "semantic", "threshold": 0.8}
    await cache.store(scope(**semantic), body("capital city of France"), answer(), 0.01, 9.0)
    hit = await cache.lookup(scope(**semantic), body("France capital city of"))
    assert hit is not None
    assert hit.kind == "semantic"
    assert hit.similarity > 0.99
    assert cache_header(hit) == "hit-semantic"
    other_system = body("capital city of France")
    other_system["messages"][0]["content"] = "Answer in French."
    assert await cache.lookup(scope(**semantic), other_system) is None
    # A new embedding model: the old vectors are not comparable, so nothing matches.
    cache._embedder = lambda: WordEmbedder("words-v2")
    assert await cache.lookup(scope(**semantic), body("France capital city of")) is None


async def test_a_stored_answer_reuses_the_lookup_embedding() -> None:
    words = WordEmbedder()
    cache = make(words)
    semantic = {"mode": "semantic"}
    assert await cache.lookup(scope(**semantic), body("capital of Peru")) is None
    await cache.store(scope(**semantic), body("capital of Peru"), answer(), None, 1.0)
    assert words.calls == 1


class Broken:
    name = "broken"

    async def _fail(self, *args: Any) -> Any:
        raise ConnectionError("backend down")

    get = put = nearest = purge = stats = close = _fail

    async def count(self, project_id: str, outcome: Outcome) -> None:
        raise ConnectionError("backend down")


async def test_a_broken_backend_is_a_miss_and_a_counted_failure() -> None:
    cache = ResponseCache(Broken(), retry_s=0)  # type: ignore[arg-type]
    assert await cache.lookup(scope(), body("q")) is None
    assert not await cache.store(scope(), body("q"), answer(), None, 1.0)
    assert cache.failures == 2
    assert cache.status()["error"] == "ConnectionError: backend down"


async def test_after_a_failure_the_backend_is_left_alone_for_a_while() -> None:
    cache = ResponseCache(Broken(), retry_s=60)  # type: ignore[arg-type]
    assert await cache.lookup(scope(), body("q")) is None
    assert await cache.lookup(scope(), body("q")) is None  # not even tried
    assert not await cache.store(scope(), body("q"), answer(), None, 1.0)
    assert (cache.failures, cache.counts["skipped"]) == (1, 2)


async def test_semantic_lookup_with_minilm_hits_a_paraphrase_not_a_negation(
    minilm: LocalEmbedder,
) -> None:
    await minilm.embed(["load the model first"])
    cache = make(minilm)
    semantic = {"mode": "semantic"}  # the default threshold, verification on
    cached = body("Which foods should I eat with gout?")
    await cache.store(scope(**semantic), cached, answer("Cherries, water."), None, 1.0)
    paraphrase = await cache.lookup(scope(**semantic), body("What foods should I eat with gout?"))
    assert paraphrase is not None
    assert paraphrase.kind == "semantic"
    negated = body("Which foods should I not eat with gout?")
    assert await cache.lookup(scope(**semantic), negated) is None
    unverified = await cache.lookup(scope(mode="semantic", verify=False), negated)
    assert unverified is not None  # the embedding alone would have served it


@pytest.mark.parametrize("mode", ["exact", "semantic", "both"])
async def test_the_mode_decides_which_lookups_run(mode: str) -> None:
    cache = make(WordEmbedder())
    await cache.store(scope(mode="both"), body("capital city of Chile"), answer(), None, 1.0)
    exact = await cache.lookup(scope(mode=mode), body("capital city of Chile"))
    near = await cache.lookup(scope(mode=mode, threshold=0.8), body("Chile capital city of"))
    assert (exact is not None) is True  # semantic mode finds the same text at similarity 1
    assert (near is not None) is (mode != "exact")


def test_entries_round_trip_through_bytes() -> None:
    entry = Entry("id", "p", "r", None, b'{"a":1}', "q", "b", "m", None, 1.0, 2.0, 3.0)
    assert Entry.from_bytes(entry.to_bytes()) == entry


async def test_an_answer_stored_before_the_embedder_is_ready_gets_its_vector_later() -> None:
    embedder = LoadingEmbedder()
    cache = make(embedder)
    both = scope(mode="both")
    assert await cache.store(both, body("What is the capital of France?"), answer(), None, 1)
    # At once: an exact hit; no semantic one (there is no vector yet).
    assert await cache.lookup(both, body("What is the capital of France?")) is not None
    assert await cache.lookup(both, body("What is the capital of France ?")) is None
    assert cache.status()["awaiting_embedding"] == 1
    embedder.loaded.set()
    await cache.wait_for_late_embeddings()
    hit = await cache.lookup(both, body("What is the capital of France ?"))
    assert hit is not None
    assert hit.kind == "semantic"
    assert (cache.counts["late_embedded"], cache.status()["awaiting_embedding"]) == (1, 0)


async def test_the_startup_queue_is_bounded_and_a_failed_model_is_counted() -> None:
    embedder = LoadingEmbedder(fail=True)
    cache = ResponseCache(MemoryBackend(100, 10**6), lambda: embedder, late_limit=1)
    both = scope(mode="both")
    await cache.store(both, body("What is the capital of France?"), answer(), None, 1)
    await cache.store(both, body("What is the capital of Spain?"), answer("Madrid."), None, 1)
    assert cache.counts["late_dropped"] == 1  # over the bound: exact-only, counted
    embedder.loaded.set()
    await cache.wait_for_late_embeddings()
    assert cache.counts["late_dropped"] == 2  # the model failed: counted, not lost silently
    assert "model files missing" in (cache.status()["error"] or "")
    # Both answers still serve exact hits.
    assert await cache.lookup(both, body("What is the capital of France?")) is not None
    assert await cache.lookup(both, body("What is the capital of Spain?")) is not None
