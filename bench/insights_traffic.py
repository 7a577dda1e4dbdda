"""Embedding of traffic in the background: what `offer()` costs the request path, and how many
sampled requests per second the bundled MiniLM embeds and stores. Prints JSON.

    .venv/bin/python bench/insights_traffic.py [--requests 3000] [--threads 1] [--data FILE]
        [--workers thread,process]

Requests are CLINC150 dev texts as chat traces; they are written to a real SQLite store.
Each `--workers` entry runs in turn: the background thread (ONNX Runtime at one thread, else
PyTorch; bfloat16 on PyTorch where the CPU has it) and the child process of
`insights_process: true` (ONNX Runtime), both at their default priority.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

from keel.auth.keys import Principal
from keel.deploy.bundled import minilm_dir
from keel.embeddings.local import LocalEmbedder
from keel.insights.store import InsightStore
from keel.insights.traffic import TrafficEmbedder
from keel.store import migrate
from keel.store.db import Database
from keel.tracing.model import RequestTrace

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "insights" / "clinc150_dev.jsonl"


def traces(texts: list[str]) -> list[RequestTrace]:
    principal = Principal("bench", "default", "app")
    made = []
    for i, text in enumerate(texts):
        trace = RequestTrace(lambda _t: None, f"{i:032x}", "chat/completions", principal,
                             {"messages": [{"role": "user", "content": text}]},
                             start_ns=time.time_ns())  # fmt: skip
        trace.end_ns = trace.start_ns + 1_000_000
        made.append(trace)
    return made


async def run(texts: list[str], threads: int, worker: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder:
        database = Database(f"sqlite:///{folder}/keel.db")
        migrate.upgrade(database)
        embedder = LocalEmbedder("minilm", minilm_dir(), threads=threads or None,
                                 background_process=worker == "process")  # fmt: skip
        await embedder.embed(["warm up"])
        await embedder.embed_background(["warm up"])  # the child, if any, has started
        traffic = TrafficEmbedder(InsightStore(database), lambda: embedder,
                                  queue_size=len(texts) + 1)  # fmt: skip
        batch = traces(texts)
        # The request path: offer() alone, measured on traces that are then dropped.
        probe = TrafficEmbedder(InsightStore(database), lambda: embedder, sample_rate=0.5,
                                queue_size=0)  # fmt: skip
        started = time.perf_counter_ns()
        for trace in batch:
            probe.offer(trace)
        offer_ns = (time.perf_counter_ns() - started) / len(batch)
        started = time.perf_counter()
        for trace in batch:
            traffic.offer(trace)
        while traffic.embedded < len(batch):  # noqa: ASYNC110 - a counter, polled
            await asyncio.sleep(0.05)
        seconds = time.perf_counter() - started
        await traffic.close()
        embedder.close()
        return {
            "requests": len(batch),
            "embedded_per_second": round(len(batch) / seconds, 1),
            "offer_ns_per_request": round(offer_ns, 1),
            "threads": threads,
            "worker": worker,
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--threads", type=int, default=1, help="embedding_threads (0: all)")
    parser.add_argument("--workers", default="thread,process", help="thread, process or both")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    texts = [r["text"] for r in rows][: args.requests]
    results = {w: asyncio.run(run(texts, args.threads, w)) for w in args.workers.split(",")}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
