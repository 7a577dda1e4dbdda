"""Mine real-query pairs for the semantic cache from CLINC150 (dev file), with MiniLM.

    .venv/bin/python bench/cache_real_pairs.py [--source PATH] [--near-misses 1200]
        [--paraphrases 600] [--out bench/data/cache_real_pairs.jsonl] [--relabel]

Near-misses: each query and its nearest neighbour with another intent (cosine of the
bundled all-MiniLM-L6-v2); the most similar pairs are kept. A different intent means a
different answer, so each is labelled "miss" unless bench/data/cache_real_reviews.jsonl
says otherwise after a review by hand (the pair then keeps its label "hit"/"miss"
and the reviewer's note). Paraphrases: each query and its nearest neighbour of the same
intent (another text), most similar first, labelled "hit".

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


async def mine(
    rows: list[dict[str, Any]], near_misses: int, paraphrases: int
) -> list[dict[str, Any]]:
    by_text: dict[str, str] = {}
    for row in rows:
        if row["intent"] != "oos":
            by_text.setdefault(row["text"].strip(), row["intent"])
    texts = sorted(by_text)
    intents = np.array([by_text[t] for t in texts])
    embedder = LocalEmbedder("all-minilm-l6-v2", minilm_dir(), batch_size=256)
    vectors = (await embedder.embed(texts)).vectors
    embedder.close()
    other: list[tuple[float, int, int]] = []
    same: list[tuple[float, int, int]] = []
    for start in range(0, len(texts), 1024):
        block = vectors[start : start + 1024] @ vectors.T
        for offset, scores in enumerate(block):
            i = start + offset
            scores[i] = -2.0
            mask = intents == intents[i]
            j = int(np.argmax(np.where(mask, -2.0, scores)))
            other.append((float(scores[j]), min(i, j), max(i, j)))
            j = int(np.argmax(np.where(mask, scores, -2.0)))
            same.append((float(scores[j]), min(i, j), max(i, j)))
    reviewed = reviews()
    found: list[dict[str, Any]] = []
    for kind, candidates, count in (("near_miss", other, near_misses),
                                    ("paraphrase", same, paraphrases)):  # fmt: skip
        best: dict[tuple[int, int], float] = {}
        for similarity, i, j in candidates:  # each pair once (found from either side)
            best[(i, j)] = max(similarity, best.get((i, j), -2.0))
        ranked = sorted(((s, i, j) for (i, j), s in best.items()), reverse=True)
        for similarity, i, j in ranked[:count]:
            a, b = texts[i], texts[j]
            row = {"cached": a, "query": b, "label": "miss" if kind == "near_miss" else "hit",
                   "kind": kind, "part": part(by_text[a], by_text[b]),
                   "intents": [by_text[a], by_text[b]],
                   "similarity": round(similarity, 4)}  # fmt: skip
            review = reviewed.get((a, b))
            if review is not None:
                row["label"], row["review"] = review["label"], review["note"]
            found.append(row)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--near-misses", type=int, default=1200)
    parser.add_argument("--paraphrases", type=int, default=600)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--relabel", action="store_true",
                        help="Only apply the reviews to the pairs already in --out.")  # fmt: skip
    args = parser.parse_args()
    if args.relabel:
        found = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
        reviewed = reviews()
        for row in found:
            review = reviewed.get((row["cached"], row["query"]))
            if review is not None:
                row["label"], row["review"] = review["label"], review["note"]
    else:
        rows = [json.loads(line) for line in args.source.read_text().splitlines() if line.strip()]
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
