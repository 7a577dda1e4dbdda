"""What a cache lookup costs: exact hits, semantic lookups (embedding included), and
semantic lookups over a bucket of 100,000 entries; in-process and over Redis.

    .venv/bin/python bench/cache_latency.py [--runs 2000] [--semantic-runs 300]
        [--big 100000] [--backends memory,redis] [--redis-url redis://127.0.0.1:6379/0]
        [--runtimes onnxruntime,torch]

Prints JSON: p50/p90/p99 in milliseconds of ResponseCache.lookup per case. `exact_hit` is
what a hit adds to a request (the lookup that answers it); `exact_miss` is what every
cacheable miss pays. `semantic` embeds a new question each time (the real MiniLM) and
searches a bucket of 1,000 answers; `semantic_big` the same over `--big` entries (random
unit vectors besides the real ones); `first_lookups_s` is how long until the bucket
answers (a Redis replica reads it in the background first). Every case runs once per
`--runtimes` entry, side by side: the query embedded on ONNX Runtime (Keel's default) and
on PyTorch. Redis runs use a fresh key prefix, deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
import uuid
from datetime import date
from typing import Any

import numpy as np
import orjson
import redis

from keel.cache.base import CacheBackend, Entry
from keel.cache.config import CacheConfig, CacheScope
from keel.cache.keys import bucket_key, exact_key, semantic_key
from keel.cache.memory import MemoryBackend
from keel.cache.redis import RedisBackend
from keel.cache.service import ResponseCache
from keel.deploy.bundled import minilm_dir
from keel.embeddings.local import LocalEmbedder
from keel.limits.redis import connect

ANSWER = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "chat",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "A typical answer of a few sentences. " * 12}}],
    "usage": {"prompt_tokens": 40, "completion_tokens": 120, "total_tokens": 160},
}  # fmt: skip
TOPICS = ["reset a password", "export a report", "merge two cells", "rename a branch",
          "cancel an order", "change the billing address", "invite a teammate",
          "delete an account", "set a reminder", "share a folder"]  # fmt: skip
PLACES = ["the web app", "the mobile app", "Excel", "Git", "the admin console", "Slack",
          "the dashboard", "Outlook", "the API", "the CLI"]  # fmt: skip


def questions(count: int, variant: int = 0) -> list[str]:
    """Distinct, realistic questions; `variant` picks another wording of the same ones."""
    forms = ["How do I {t} in {p}? (case {n})", "What's the way to {t} in {p}? (case {n})"]
    return [forms[variant].format(t=TOPICS[i % 10], p=PLACES[(i // 10) % 10], n=i)
            for i in range(count)]  # fmt: skip


def body(text: str) -> dict[str, Any]:
    return {"model": "chat", "temperature": 0, "max_tokens": 200,
            "messages": [{"role": "system", "content": "You are a helpful support agent."},
                         {"role": "user", "content": text}]}  # fmt: skip


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]

    return {"p50_ms": round(statistics.median(ordered), 3), "p90_ms": round(rank(0.9), 3),
            "p99_ms": round(rank(0.99), 3), "n": len(ordered)}  # fmt: skip


async def timed(cache: ResponseCache, scope: CacheScope, bodies: list[dict[str, Any]],
                expect_hit: bool) -> dict[str, float]:  # fmt: skip
    samples, hits = [], 0
    for request in bodies:
        started = time.perf_counter()
        hit = await cache.lookup(scope, request)
        samples.append((time.perf_counter() - started) * 1000)
        hits += hit is not None
    result = percentiles(samples)
    result["hit_share"] = round(hits / len(bodies), 3)
    assert (hits > 0) is expect_hit or not bodies, result
    return result


def _entry(scope: CacheScope, text: str, bucket: str, model: str) -> Entry:
    now = time.time()
    return Entry(exact_key(scope.project_id, scope.route_identity, body(text)), scope.project_id,
                 scope.route, None, orjson.dumps(ANSWER), text, bucket, model, 0.001, 900.0, now,
                 now + 3600)  # fmt: skip


async def fill(backend: CacheBackend, embedder: LocalEmbedder, scope: CacheScope,
               texts: list[str], random_extra: int = 0) -> float:  # fmt: skip
    """Store answers to `texts` (embedded in batches) plus `random_extra` entries with random
    unit vectors, all in the bucket of scope; returns the seconds it took."""
    key = semantic_key(scope.project_id, scope.route_identity, body("x"))
    assert key is not None
    bucket = bucket_key(key.context, embedder.name)
    started = time.perf_counter()
    rng = np.random.default_rng(5)
    for start in range(0, random_extra, 1000):
        vectors = rng.standard_normal((min(1000, random_extra - start), embedder.dimension))
        vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
        for offset, vector in enumerate(vectors):
            text = f"filler question {start + offset}"
            await backend.put(_entry(scope, text, bucket, embedder.name), vector)
    for start in range(0, len(texts), 64):
        batch = texts[start : start + 64]
        for text, vector in zip(batch, (await embedder.embed(batch)).vectors, strict=True):
            await backend.put(_entry(scope, text, bucket, embedder.name), vector)
    return time.perf_counter() - started


async def measure(kind: str, args: argparse.Namespace, embedder: LocalEmbedder) -> dict[str, Any]:
    prefix = f"keel-bench-{uuid.uuid4().hex[:8]}"
    capacity = args.big + 10_000

    def backend() -> CacheBackend:
        if kind == "memory":
            return MemoryBackend(capacity, 2**40)
        return RedisBackend(connect(args.redis_url), prefix, capacity, 2**40)

    cache = ResponseCache(backend(), lambda: embedder)
    results: dict[str, Any] = {}
    try:
        exact = CacheScope("bench", "chat", "chat@1", CacheConfig(mode="exact"))
        stored = [body(q) for q in questions(args.runs)]
        for request in stored:
            await cache.store(exact, request, ANSWER, 0.001, 900.0)
        unseen = [body(q + " now") for q in questions(args.runs)]
        for _ in range(2):  # warm-up, then measured
            results["exact_hit"] = await timed(cache, exact, stored, expect_hit=True)
        results["exact_miss"] = await timed(cache, exact, unseen, expect_hit=False)

        semantic = CacheScope("bench", "chat", "chat@2", CacheConfig(mode="semantic"))
        await fill(cache.backend, embedder, semantic, questions(1000))
        cache = ResponseCache(cache.backend, lambda: embedder, remember_vectors=0)
        paraphrases = [body(q) for q in questions(args.semantic_runs, variant=1)]
        await timed(cache, semantic, paraphrases[:10], expect_hit=True)  # warm-up
        results["semantic"] = await timed(cache, semantic, paraphrases, expect_hit=True)
        # The same lookups with their vectors remembered: the search and the entry read alone.
        remembered = ResponseCache(cache.backend, lambda: embedder)
        await timed(remembered, semantic, paraphrases, expect_hit=True)
        results["semantic_without_embedding"] = await timed(
            remembered, semantic, paraphrases, expect_hit=True
        )

        big = CacheScope("bench", "chat", "chat@3", CacheConfig(mode="semantic"))
        filled_s = await fill(cache.backend, embedder, big, questions(200), random_extra=args.big)
        probe = [body(q) for q in questions(args.semantic_runs, variant=1)]
        warm_started = time.perf_counter()
        # A Redis replica reads a large bucket in the background first; wait until it is done.
        for _ in range(9000):  # up to 15 minutes
            if await cache.lookup(big, probe[0]) is not None:
                break
            await asyncio.sleep(0.1)
        await timed(cache, big, probe[:10], expect_hit=True)
        warm_s = time.perf_counter() - warm_started
        results["semantic_big"] = await timed(cache, big, probe[: min(200, len(probe))], True)
        remembered = ResponseCache(cache.backend, lambda: embedder)
        await timed(remembered, big, probe[: min(200, len(probe))], True)
        results["semantic_big_without_embedding"] = await timed(
            remembered, big, probe[: min(200, len(probe))], True
        )
        results["semantic_big"].update(entries=args.big + 200, fill_s=round(filled_s, 1),
                                       first_lookups_s=round(warm_s, 1))  # fmt: skip
        results["failures"] = cache.failures
    finally:
        await cache.close()
        if kind == "redis":
            client = redis.Redis.from_url(args.redis_url)
            keys = list(client.scan_iter(match=f"{prefix}:*", count=5000))
            for start in range(0, len(keys), 5000):
                client.delete(*keys[start : start + 5000])
            client.close()
    return results


async def embedding_alone(embedder: LocalEmbedder, runs: int) -> dict[str, float]:
    samples = []
    for text in questions(runs, variant=1):
        started = time.perf_counter()
        await embedder.embed([text])
        samples.append((time.perf_counter() - started) * 1000)
    return percentiles(samples)


async def one_runtime(args: argparse.Namespace, runtime: str) -> dict[str, Any]:
    """Every case with the query embedded on `runtime` ("onnxruntime" or "torch")."""
    embedder = LocalEmbedder("all-minilm-l6-v2", minilm_dir(), onnx=runtime == "onnxruntime")
    await embedder.embed(["warm up"])
    if embedder.runtime != runtime:
        raise SystemExit(f"asked for {runtime}, the embedder runs on {embedder.runtime}")
    result: dict[str, Any] = {"embedding_alone": await embedding_alone(embedder, 100)}
    try:
        for kind in args.backends.split(","):
            result[kind] = await measure(kind, args, embedder)
    finally:
        embedder.close()
    result["goals"] = {
        kind: {
            "exact_hit_p50_under_1ms": result[kind]["exact_hit"]["p50_ms"] < 1,
            "semantic_p50_under_10ms": result[kind]["semantic"]["p50_ms"] < 10,
            "semantic_big_p50_under_15ms": result[kind]["semantic_big"]["p50_ms"] < 15,
        }
        for kind in args.backends.split(",")
    }
    return result


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "bench": "cache_latency",
        "date": date.today().isoformat(),
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    for runtime in args.runtimes.split(","):
        result[runtime] = await one_runtime(args, runtime)
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2000, help="Exact lookups per case.")
    parser.add_argument("--semantic-runs", type=int, default=300)
    parser.add_argument("--big", type=int, default=100_000, help="Entries of the big bucket.")
    parser.add_argument("--backends", default="memory,redis")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--runtimes", default="onnxruntime,torch", help="What embeds queries, side by side."
    )
    print(json.dumps(asyncio.run(run(parser.parse_args())), indent=1))


if __name__ == "__main__":
    main()
