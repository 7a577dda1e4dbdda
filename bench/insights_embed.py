"""MiniLM texts per second: the embedder's former path (tokenise for the count, then
SentenceTransformer.encode) against LocalEmbedder's exact path (tokenise once, batches by
length) and its approximate one (the same in bfloat16, what traffic insights use), side by
side in one process, at 1 and 2 torch threads and a few batch sizes; and the cosine of the
paths' vectors to the former's on the first 100 texts. Prints JSON.

    .venv/bin/python bench/insights_embed.py [--texts 2000] [--rounds 3] [--data FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from keel.deploy.bundled import minilm_dir
from keel.embeddings.local import LocalEmbedder

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "insights" / "clinc150_dev.jsonl"


def former(model: Any, texts: list[str], batch_size: int) -> np.ndarray:
    """The path LocalEmbedder took before: a tokenisation only to count, then encode()."""
    encoded = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)
    sum(len(ids) for ids in encoded["input_ids"])
    vectors = model.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                           normalize_embeddings=True, show_progress_bar=False)  # fmt: skip
    return np.asarray(vectors, dtype=np.float32)


def rate(run: Any, texts: list[str]) -> float:
    started = time.perf_counter()
    run(texts)
    return len(texts) / (time.perf_counter() - started)


async def main_async(texts: list[str], rounds: int) -> dict[str, Any]:
    embedder = LocalEmbedder("minilm", minilm_dir())
    await embedder.embed(["warm up"])
    model = embedder._model
    default_threads = torch.get_num_threads()
    configs: list[tuple[str, int, int]] = []
    for threads in sorted({1, default_threads}):
        configs.append(("former", threads, 32))
        configs += [("exact", threads, size) for size in (32, 64)]
        configs += [("approximate", threads, size) for size in (32, 64, 128)]
    results: dict[str, list[float]] = {}
    for _ in range(rounds):  # interleaved, so load changes hit every configuration alike
        for path, threads, size in configs:
            torch.set_num_threads(threads)
            embedder._threads, embedder._batch_size = threads, size
            if path == "former":
                run = lambda t, s=size: former(model, t, s)  # noqa: E731
            else:
                run = lambda t, a=path == "approximate": embedder._embed_sync(t, a)  # noqa: E731
            results.setdefault(f"{path} threads={threads} batch={size}", []).append(
                rate(run, texts)
            )
    torch.set_num_threads(default_threads)
    embedder._threads, embedder._batch_size = None, 32
    sample = texts[:100]
    old = former(model, sample, 32)
    cosines = {path: np.sum(old * embedder._embed_sync(sample, path == "approximate").vectors,
                            axis=1) for path in ("exact", "approximate")}  # fmt: skip
    embedder.close()
    return {
        "texts": len(texts),
        "rounds": rounds,
        "texts_per_second_median": {k: round(float(np.median(v)), 1) for k, v in results.items()},
        "cosine_to_former_100_texts": {
            path: {"min": round(float(c.min()), 6), "mean": round(float(c.mean()), 6)}
            for path, c in cosines.items()
        },
        "approximate_in_bfloat16": embedder._approximate_ok,
        "torch_default_threads": default_threads,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    texts = [r["text"] for r in rows]
    random.Random(0).shuffle(texts)
    print(json.dumps(asyncio.run(main_async(texts[: args.texts], args.rounds)), indent=2))


if __name__ == "__main__":
    main()
