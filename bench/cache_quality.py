"""Hit rate and false-hit rate of the semantic cache per threshold, with the real MiniLM.

    .venv/bin/python bench/cache_quality.py [--from 0.70] [--to 0.98] [--step 0.01]

For each labelled pair of bench/cache_pairs.py, the cached query's answer is reused for
the new query when their cosine similarity reaches the threshold (and, with verification,
keel.cache.verify.consistent agrees). Prints JSON: per threshold, with and without
verification, the paraphrase hit rate, the near-miss false-hit rate (overall and per
kind); the recommended threshold (the lowest with no false hit, with verification, that
keeps hits ≥ 60 %; else the best hit rate with false hits ≤ 1 %); and a check of that
threshold through ResponseCache itself (each pair in its own project).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from collections import defaultdict
from datetime import date
from typing import Any

import numpy as np

from cache_pairs import Pair, pairs
from keel.cache.config import CacheConfig, CacheScope
from keel.cache.memory import MemoryBackend
from keel.cache.service import ResponseCache
from keel.cache.verify import consistent
from keel.deploy.bundled import minilm_dir
from keel.embeddings.local import LocalEmbedder

MAX_FALSE_HITS = 0.01
MIN_HITS = 0.60


def _rates(
    found: list[Pair], similarity: np.ndarray, verified: np.ndarray, threshold: float, verify: bool
) -> dict[str, Any]:
    reused = similarity >= threshold - 1e-9
    if verify:
        reused &= verified
    hits = [bool(r) for r, p in zip(reused, found, strict=True) if p.label == "hit"]
    misses = [bool(r) for r, p in zip(reused, found, strict=True) if p.label == "miss"]
    by_kind: dict[str, list[bool]] = defaultdict(list)
    for r, p in zip(reused, found, strict=True):
        if p.label == "miss":
            by_kind[p.kind].append(bool(r))
    return {
        "threshold": round(threshold, 3),
        "hit_rate": round(sum(hits) / len(hits), 4),
        "false_hit_rate": round(sum(misses) / len(misses), 4),
        "false_hits_by_kind": {k: round(sum(v) / len(v), 4) for k, v in sorted(by_kind.items())},
    }


def _share(verified: np.ndarray, found: list[Pair], label: str) -> float:
    return float(np.mean([v for v, p in zip(verified, found, strict=True) if p.label == label]))


def _choose(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The best hit rate with false hits ≤ 1 %, with a margin: verification was written
    against near-misses like these, so it is stronger here than on real traffic. Prefer the
    lowest threshold with no false hit at all while it keeps the hit rate goal."""
    clean = [r for r in rows if r["false_hit_rate"] == 0 and r["hit_rate"] >= MIN_HITS]
    if clean:
        return min(clean, key=lambda r: r["threshold"])
    allowed = [r for r in rows if r["false_hit_rate"] <= MAX_FALSE_HITS]
    return max(allowed, key=lambda r: (r["hit_rate"], -r["threshold"]), default=None)


async def _through_cache(
    embedder: LocalEmbedder, found: list[Pair], threshold: float
) -> dict[str, float]:
    """The same decisions made by ResponseCache.lookup over the memory backend."""
    cache = ResponseCache(MemoryBackend(10_000, 2**30), lambda: embedder)
    config = CacheConfig(mode="semantic", threshold=threshold, verify=True)
    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                           "finish_reason": "stop"}]}  # fmt: skip
    outcome: dict[str, list[bool]] = {"hit": [], "miss": []}
    for number, pair in enumerate(found):
        scope = CacheScope(f"pair-{number}", "bench", "bench@1", config)

        def body(text: str) -> dict[str, Any]:
            return {"model": "m", "temperature": 0, "messages": [{"role": "user", "content": text}]}

        await cache.store(scope, body(pair.cached), answer, None, 1.0)
        outcome[pair.label].append(await cache.lookup(scope, body(pair.query)) is not None)
    return {
        "hit_rate": round(sum(outcome["hit"]) / len(outcome["hit"]), 4),
        "false_hit_rate": round(sum(outcome["miss"]) / len(outcome["miss"]), 4),
    }


async def run(start: float, stop: float, step: float) -> dict[str, Any]:
    found = pairs()
    embedder = LocalEmbedder("all-minilm-l6-v2", minilm_dir())
    texts = sorted({p.cached for p in found} | {p.query for p in found})
    started = time.perf_counter()
    vectors = (await embedder.embed(texts)).vectors
    embed_s = time.perf_counter() - started
    row = {text: i for i, text in enumerate(texts)}
    similarity = np.array(
        [float(vectors[row[p.cached]] @ vectors[row[p.query]]) for p in found], dtype=np.float32
    )
    verified = np.array([consistent(p.query, p.cached) for p in found])
    thresholds = np.arange(start, stop + step / 2, step)
    plain = [_rates(found, similarity, verified, float(t), verify=False) for t in thresholds]
    checked = [_rates(found, similarity, verified, float(t), verify=True) for t in thresholds]
    chosen = _choose(checked)
    result: dict[str, Any] = {
        "bench": "cache_quality",
        "date": date.today().isoformat(),
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
        "embedding_model": embedder.name,
        "pairs": len(found),
        "paraphrases": sum(p.label == "hit" for p in found),
        "near_misses": sum(p.label == "miss" for p in found),
        "embed_seconds": round(embed_s, 2),
        "verification_alone": {
            "paraphrases_kept": round(_share(verified, found, "hit"), 4),
            "near_misses_rejected": round(1 - _share(verified, found, "miss"), 4),
        },
        "without_verification": plain,
        "with_verification": checked,
        "best_without_verification": _choose(plain),
        "recommended": chosen,
        "goal": {
            "max_false_hit_rate": MAX_FALSE_HITS,
            "min_hit_rate": MIN_HITS,
            "met": bool(chosen and chosen["hit_rate"] >= MIN_HITS),
        },
    }
    if chosen is not None:
        result["recommended_through_cache"] = await _through_cache(
            embedder, found, chosen["threshold"]
        )
    embedder.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="start", type=float, default=0.70)
    parser.add_argument("--to", dest="stop", type=float, default=0.98)
    parser.add_argument("--step", type=float, default=0.01)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.start, args.stop, args.step)), indent=1))


if __name__ == "__main__":
    main()
