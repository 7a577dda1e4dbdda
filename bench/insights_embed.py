"""MiniLM texts per second: the embedder's former path (tokenise for the count, then
SentenceTransformer.encode) against LocalEmbedder's exact path (tokenise once, batches by
length) and its approximate one (the same in bfloat16, what traffic insights use), side by
side in one process, at 1 and 2 torch threads and a few batch sizes; and the cosine of the
paths' vectors to the former's on the first 100 texts. Prints JSON.

    .venv/bin/python bench/insights_embed.py [--texts 500] [--rounds 3] [--data FILE]
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


def threaded(threads: int, run: Any, texts: list[str]) -> float:
    torch.set_num_threads(threads)
    return rate(run, texts)


def rate(run: Any, texts: list[str]) -> float:
    started = time.perf_counter()
    run(texts)
    return len(texts) / (time.perf_counter() - started)


async def main_async(texts: list[str], rounds: int, per_run: int) -> dict[str, Any]:
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
    slices = iter(range(0, len(texts) - per_run + 1, per_run))
    for _ in range(rounds):  # interleaved, so load changes hit every configuration alike
        for path, threads, size in configs:
            # Texts no configuration saw before: the CPU kernels are prepared per shape,
            # and a repeated batch would find them ready.
            start = next(slices, 0)
            part = texts[start : start + per_run]
            torch.set_num_threads(threads)
            embedder._threads, embedder._batch_size = threads, size
            if path == "former":
                run = lambda t, s=size: former(model, t, s)  # noqa: E731
            else:
                run = lambda t, a=path == "approximate": embedder._embed_sync(t, a)  # noqa: E731
            # On the embedder's own worker thread, as in the server.
            found = embedder._executor.submit(threaded, threads, run, part).result()
            results.setdefault(f"{path} threads={threads} batch={size}", []).append(found)
    torch.set_num_threads(default_threads)
    embedder._threads, embedder._batch_size = None, 32
    sample = texts[:100]
    old = former(model, sample, 32)
    cosines = {path: np.sum(old * embedder._embed_sync(sample, path == "approximate").vectors,
                            axis=1) for path in ("exact", "approximate")}  # fmt: skip
    embedder.close()
    return {
        "texts_per_run": per_run,
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
    parser.add_argument("--texts", type=int, default=500, help="Texts per configuration run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    texts = [r["text"] for r in rows]
    random.Random(0).shuffle(texts)
    print(json.dumps(asyncio.run(main_async(texts, args.rounds, args.texts)), indent=2))


if __name__ == "__main__":
    main()
