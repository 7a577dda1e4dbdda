"""The Redis backend: two caches with their own clients stand for two Keel replicas."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from keel.cache.redis import RedisBackend
from keel.cache.service import ResponseCache
from keel.limits.redis import connect
from tests.cache.conftest import LoadingEmbedder, WordEmbedder, answer, body, scope
from tests.support.redis import temporary_redis_prefix

ROOT = Path(__file__).parents[2]


@pytest.fixture
def redis_prefix() -> Iterator[tuple[str, str]]:
    with temporary_redis_prefix() as found:
        yield found


def _replica(url: str, prefix: str, entries: int = 1000, size: int = 10**7) -> ResponseCache:
    embedder = WordEmbedder()
    return ResponseCache(RedisBackend(connect(url), prefix, entries, size), lambda: embedder)


@pytest.fixture
async def replicas(redis_prefix: tuple[str, str]) -> AsyncIterator[tuple[ResponseCache, ...]]:
    url, prefix = redis_prefix
    one, two = _replica(url, prefix), _replica(url, prefix)
    yield one, two
    await one.close()
    await two.close()


async def test_an_answer_cached_by_one_replica_is_a_hit_on_the_other(
    replicas: tuple[ResponseCache, ResponseCache],
) -> None:
    one, two = replicas
    both = {"mode": "both", "threshold": 0.8}
    assert await two.lookup(scope(**both), body("capital city of Chile")) is None
    assert await one.store(scope(**both), body("capital city of Chile"), answer(), 0.003, 700)
    exact = await two.lookup(scope(**both), body("capital city of Chile"))
    assert exact is not None
    assert exact.kind == "exact"
    assert exact.cost == 0.003
    near = await two.lookup(scope(**both), body("Chile capital city of"))
    assert near is not None
    assert near.kind == "semantic"
    assert await two.lookup(scope("other-project", **both), body("capital city of Chile")) is None
    stats = await one.stats("p1")
    assert (stats["backend"], stats["entries"], stats["hits_exact"], stats["hits_semantic"]) == (
        "redis", 1, 1, 1)  # fmt: skip


async def test_a_new_replica_reads_a_large_bucket_in_the_background(
    replicas: tuple[ResponseCache, ResponseCache],
) -> None:
    one, two = replicas
    semantic = {"mode": "semantic", "threshold": 0.8}
    for number in range(150):
        await one.store(scope(**semantic), body(f"question {number} about rivers"), answer(),
                        None, 1)  # fmt: skip
    probe = body("about rivers question 7")
    assert await two.lookup(scope(**semantic), probe) is None  # reading the backlog
    for _ in range(100):
        await asyncio.sleep(0.05)
        hit = await two.lookup(scope(**semantic), probe)
        if hit is not None:
            break
    assert hit is not None
    assert hit.kind == "semantic"


async def test_a_purge_on_one_replica_is_seen_by_the_other(
    replicas: tuple[ResponseCache, ResponseCache],
) -> None:
    one, two = replicas
    semantic = {"mode": "both", "threshold": 0.8}
    await one.store(scope(route="chat", prompt="faq@2", **semantic), body("opening hours today"),
                    answer(), None, 1)  # fmt: skip
    await one.store(scope(route="other"), body("x"), answer(), None, 1)
    assert await two.lookup(scope(**semantic), body("today opening hours")) is not None
    assert await two.purge("p1", prompt="faq@1") == 0
    assert await two.purge("p1", prompt="faq") == 1
    # replica one still holds the vector locally; the entry is gone, so no hit
    assert await one.lookup(scope(**semantic), body("today opening hours")) is None
    assert await one.purge("p1", route="other") == 1
    assert (await two.stats("p1"))["entries"] == 0


async def test_ttl_and_lru_limits_hold_across_replicas(redis_prefix: tuple[str, str]) -> None:
    url, prefix = redis_prefix
    one, two = _replica(url, prefix, entries=2), _replica(url, prefix, entries=2)
    try:
        await one.store(scope(), body("a"), answer(), None, 1)
        await two.store(scope(), body("b"), answer(), None, 1)
        assert await one.lookup(scope(), body("a")) is not None  # a is now recently used
        await two.store(scope(), body("c"), answer(), None, 1)
        assert await one.lookup(scope(), body("b")) is None
        assert await one.lookup(scope(), body("a")) is not None
        assert (await one.stats("p1"))["evictions"] == 1
        await one.store(scope(ttl_s=0.2), body("short"), answer(), None, 1)
        assert await two.lookup(scope(), body("short")) is not None
        await asyncio.sleep(0.3)
        assert await two.lookup(scope(), body("short")) is None
    finally:
        await one.close()
        await two.close()


async def test_bytes_limit_evicts_on_redis(redis_prefix: tuple[str, str]) -> None:
    url, prefix = redis_prefix
    cache = _replica(url, prefix, entries=100, size=2000)
    try:
        for text in ("a", "b", "c", "d"):
            await cache.store(scope(), body(text), answer("x" * 300), None, 1)
        stats = await cache.stats("p1")
        assert 0 < stats["entries"] < 4
        assert stats["bytes"] <= 2000
        assert await cache.lookup(scope(), body("d")) is not None
    finally:
        await cache.close()


async def test_redis_down_is_a_miss_and_a_counted_failure() -> None:
    backend = RedisBackend(connect("redis://127.0.0.1:9/0"), "keel", 10, 10**6)
    cache = ResponseCache(backend, retry_s=0)
    assert await cache.lookup(scope(), body("q")) is None
    assert not await cache.store(scope(), body("q"), answer(), None, 1.0)
    assert cache.failures >= 2
    await cache.close()


STORE_IN_ANOTHER_PROCESS = textwrap.dedent(
    """
    import asyncio, sys
    from keel.cache.redis import RedisBackend
    from keel.cache.service import ResponseCache
    from keel.limits.redis import connect
    from tests.cache.conftest import answer, body, scope

    async def main() -> None:
        cache = ResponseCache(RedisBackend(connect(sys.argv[1]), sys.argv[2], 100, 10**7))
        assert await cache.store(scope(), body("from the other process"), answer("42"), None, 3)
        await cache.close()

    asyncio.run(main())
    """
)


async def test_two_real_processes_share_the_cache(
    replicas: tuple[ResponseCache, ResponseCache], redis_prefix: tuple[str, str]
) -> None:
    url, prefix = redis_prefix
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", STORE_IN_ANOTHER_PROCESS, url, prefix],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    hit = await replicas[0].lookup(scope(), body("from the other process"))
    assert hit is not None
    assert hit.response["choices"][0]["message"]["content"] == "42"


async def test_an_answer_stored_while_the_embedder_loads_is_found_by_another_replica(
    redis_prefix: tuple[str, str],
) -> None:
    url, prefix = redis_prefix
    loading = LoadingEmbedder()
    first = ResponseCache(RedisBackend(connect(url), prefix, 1000, 10**7), lambda: loading)
    second = _replica(url, prefix)
    both = scope(mode="both")
    try:
        await first.store(both, body("What is the capital of France?"), answer(), None, 1)
        assert await second.lookup(both, body("What is the capital of France ?")) is None
        loading.loaded.set()
        await first.wait_for_late_embeddings()
        hit = await second.lookup(both, body("What is the capital of France ?"))
        assert hit is not None
        assert hit.kind == "semantic"
        assert (await second.stats("p1"))["entries"] == 1  # replaced in place, not added
    finally:
        await first.close()
        await second.close()
