"""Mine real-query pairs for the semantic cache from CLINC150 (dev file), with MiniLM.

    .venv/bin/python bench/cache_real_pairs.py [--source PATH] [--near-misses 1200]
        [--paraphrases 600] [--out bench/data/cache_real_pairs.jsonl] [--relabel]
    .venv/bin/python bench/cache_real_pairs.py --test-like
        [--out bench/data/cache_testlike_pairs.jsonl]

Near-misses: each query and its nearest neighbour with another intent (cosine of the
bundled all-MiniLM-L6-v2); the most similar pairs are kept. A different intent means a
different answer, so each is labelled "miss" unless bench/data/cache_real_reviews.jsonl
says otherwise after a review by hand (the pair then keeps its label "hit"/"miss"
and the reviewer's note). Paraphrases: each query and its nearest neighbour of the same
intent (another text), most similar first, labelled "hit".

`--test-like` mines sets shaped like CLINC150's test split instead: each intent's 120
queries are dealt into 4 disjoint samples of 30 (the test split's size), and in each sample
the 1,000 most similar near-misses with cosine 0.65 to 0.96 and the 500 most similar
paraphrases are kept, all labelled strictly (two intents: a miss). Its near-misses are far
less alike than the 1,200 above, as an outside check on the test split finds them.

Every pair carries the CLINC domains of its two intents, for leave-one-domain-out figures.
Pairs are split by intent (leave-intents-out): a fixed fifth of the 150 intents, chosen by
a hash of the intent name, is held out; a pair touching a held-out intent is "heldout",
the rest "dev". Rules are tuned on "dev" only. The out-of-scope rows (intent "oos") are
left out: they share no intent with each other.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np

from keel.deploy.bundled import minilm_dir
from keel.embeddings.local import LocalEmbedder

ROOT = Path(__file__).resolve().parent
SOURCE = ROOT.parent.parent / "shared" / "data" / "insights" / "clinc150_dev.jsonl"
OUT = ROOT / "data" / "cache_real_pairs.jsonl"
REVIEWS = ROOT / "data" / "cache_real_reviews.jsonl"
HELDOUT_SHARE = 5  # one intent in five is held out
TEST_LIKE = ROOT / "data" / "cache_testlike_pairs.jsonl"
TEST_LIKE_SAMPLES = 4  # 120 queries an intent in the dev file, 30 in the test split
TEST_LIKE_NEAR, TEST_LIKE_PARA, TEST_LIKE_RANGE = 1000, 500, (0.65, 0.96)
SEED = 25


def heldout_intent(intent: str) -> bool:
    return hashlib.sha256(intent.encode()).digest()[0] % HELDOUT_SHARE == 0


def part(*intents: str) -> str:
    return "heldout" if any(heldout_intent(i) for i in intents) else "dev"


def reviews(path: Path = REVIEWS) -> dict[tuple[str, str], dict[str, str]]:
    """Hand-reviewed labels by (cached, query), in either order."""
    found: dict[tuple[str, str], dict[str, str]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                found[(row["cached"], row["query"])] = row
                found[(row["query"], row["cached"])] = row
    return found


def _intents(rows: list[dict[str, Any]]) -> tuple[dict[str, str], dict[str, str]]:
    """Intent by text (the out-of-scope rows left out) and domain by intent."""
    by_text: dict[str, str] = {}
    domains: dict[str, str] = {}
    for row in rows:
        if row["intent"] != "oos":
            by_text.setdefault(row["text"].strip(), row["intent"])
            domains[row["intent"]] = row.get("domain", "")
    return by_text, domains


async def _embed(texts: list[str]) -> np.ndarray:
    embedder = LocalEmbedder("all-minilm-l6-v2", minilm_dir(), batch_size=256)
    vectors = (await embedder.embed(texts)).vectors
    embedder.close()
    return np.asarray(vectors, dtype=np.float32)


def _nearest(
    vectors: np.ndarray, intents: np.ndarray
) -> tuple[list[tuple[float, int, int]], list[tuple[float, int, int]]]:
    """Each text's nearest neighbour of another intent, and of the same intent."""
    other: list[tuple[float, int, int]] = []
    same: list[tuple[float, int, int]] = []
    for start in range(0, len(vectors), 1024):
        block = vectors[start : start + 1024] @ vectors.T
        for offset, scores in enumerate(block):
            i = start + offset
            scores[i] = -2.0
            mask = intents == intents[i]
            j = int(np.argmax(np.where(mask, -2.0, scores)))
            other.append((float(scores[j]), min(i, j), max(i, j)))
            j = int(np.argmax(np.where(mask, scores, -2.0)))
            same.append((float(scores[j]), min(i, j), max(i, j)))
    return other, same


def _ranked(
    candidates: list[tuple[float, int, int]], count: int, low: float = -2.0, high: float = 2.0
) -> list[tuple[float, int, int]]:
    """The `count` most similar distinct pairs within [low, high] (each found from either
    side once)."""
    best: dict[tuple[int, int], float] = {}
    for similarity, i, j in candidates:
        best[(i, j)] = max(similarity, best.get((i, j), -2.0))
    kept = ((s, i, j) for (i, j), s in best.items() if low <= s <= high)
    return sorted(kept, reverse=True)[:count]


def _row(
    a: str,
    b: str,
    kind: str,
    similarity: float,
    by_text: dict[str, str],
    domains: dict[str, str],
) -> dict[str, Any]:
    return {"cached": a, "query": b, "label": "miss" if kind == "near_miss" else "hit",
            "kind": kind, "part": part(by_text[a], by_text[b]),
            "intents": [by_text[a], by_text[b]],
            "domains": [domains[by_text[a]], domains[by_text[b]]],
            "similarity": round(similarity, 4)}  # fmt: skip


async def mine(
    rows: list[dict[str, Any]], near_misses: int, paraphrases: int
) -> list[dict[str, Any]]:
    by_text, domains = _intents(rows)
    texts = sorted(by_text)
    other, same = _nearest(await _embed(texts), np.array([by_text[t] for t in texts]))
    reviewed = reviews()
    found: list[dict[str, Any]] = []
    for kind, candidates, count in (("near_miss", other, near_misses),
                                    ("paraphrase", same, paraphrases)):  # fmt: skip
        for similarity, i, j in _ranked(candidates, count):
            row = _row(texts[i], texts[j], kind, similarity, by_text, domains)
            review = reviewed.get((texts[i], texts[j]))
            if review is not None:
                row["label"], row["review"] = review["label"], review["note"]
            found.append(row)
    return found


async def mine_test_like(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pairs mined as from CLINC150's test split, in 4 disjoint samples of the dev file."""
    by_text, domains = _intents(rows)
    texts = sorted(by_text)
    vectors = await _embed(texts)
    index = {text: i for i, text in enumerate(texts)}
    samples: list[list[str]] = [[] for _ in range(TEST_LIKE_SAMPLES)]
    rng = random.Random(SEED)
    for intent in sorted(set(by_text.values())):
        own = [t for t in texts if by_text[t] == intent]
        rng.shuffle(own)
        size = len(own) // TEST_LIKE_SAMPLES
        for number, sample in enumerate(samples):
            sample.extend(own[number * size : (number + 1) * size])
    found: list[dict[str, Any]] = []
    for number, sample in enumerate(samples):
        rows_ = [index[t] for t in sample]
        other, same = _nearest(vectors[rows_], np.array([by_text[t] for t in sample]))
        for kind, candidates, count, (low, high) in (
            ("near_miss", other, TEST_LIKE_NEAR, TEST_LIKE_RANGE),
            ("paraphrase", same, TEST_LIKE_PARA, (-2.0, 2.0)),
        ):
            for similarity, i, j in _ranked(candidates, count, low, high):
                row = _row(sample[i], sample[j], kind, similarity, by_text, domains)
                found.append({**row, "sample": number})
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--near-misses", type=int, default=1200)
    parser.add_argument("--paraphrases", type=int, default=600)
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--relabel",
        action="store_true",
        help="Only apply the reviews (and domains) to the pairs in --out.",
    )
    parser.add_argument(
        "--test-like",
        action="store_true",
        help="Mine sets shaped like CLINC150's test split instead.",
    )
    args = parser.parse_args()  # fmt: skip
    args.out = args.out or (TEST_LIKE if args.test_like else OUT)
    rows = [json.loads(line) for line in args.source.read_text().splitlines() if line.strip()]
    if args.relabel:
        found = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
        reviewed = reviews()
        _, domains = _intents(rows)
        for row in found:
            row["domains"] = [domains[intent] for intent in row["intents"]]
            review = reviewed.get((row["cached"], row["query"]))
            if review is not None:
                row["label"], row["review"] = review["label"], review["note"]
    elif args.test_like:
        found = asyncio.run(mine_test_like(rows))
    else:
        found = asyncio.run(mine(rows, args.near_misses, args.paraphrases))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(row) + "\n" for row in found))
    counts: dict[str, int] = {}
    for row in found:
        key = f"{row['kind']}/{row['part']}"
        counts[key] = counts.get(key, 0) + 1
    print(json.dumps({"out": str(args.out), "pairs": len(found), "by_kind_and_part": counts}))


if __name__ == "__main__":
    main()
