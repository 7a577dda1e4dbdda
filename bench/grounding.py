"""The groundedness scorer: latency per answer and its verdicts on SciFact claims. Prints JSON.

    .venv/bin/python bench/grounding.py [--limit 100] [--scorers cascade,second-stage]
        [--data ../shared/data/groundedness/scifact_claims_train.jsonl]

Each row is one answer (the claim) against one retrieved context (title + abstract),
scored end to end by AlignmentScorer with the real MiniLM: sentence split, word checks,
embedding where asked, features, the shipped models. Scorers: `cascade` (the default: the
word checks decide the sentences they are sure of, MiniLM aligns the rest) and
`second-stage` (every sentence aligned by MiniLM, as before the cascade). Each scorer scores
every row, taking turns row by row so that both see the same machine load; each has its own
sentence cache, and no context repeats within a run's first rows by much. p50/p95 are
wall-clock per answer; cpu_ms is the process's CPU time per answer (every thread: the
embedder's too), which a busy machine inflates far less than wall-clock time.

Quality figures (balanced accuracy, ROC-AUC, cross-validated) come from
`python -m training.grounding.train`, which docs/knowledge.md reports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from keel.deploy.bundled import minilm_dir
from keel.embeddings.local import LocalEmbedder
from keel.knowledge.grounding import AlignmentScorer

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = (
    HERE.parent.parent / "shared" / "data" / "groundedness" / "scifact_claims_train.jsonl"
)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=100, help="rows timed")
    parser.add_argument("--scorers", default="cascade,second-stage")
    parser.add_argument("--threads", type=int, default=1, help="the embedder's torch threads")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.data.open() if line.strip()]
    embedder = LocalEmbedder("all-minilm-l6-v2", minilm_dir(), threads=args.threads)
    names = args.scorers.split(",")
    scorers = {k: AlignmentScorer(embedder, cascade=k == "cascade") for k in names}
    await embedder.embed(["Warm-up sentence."])
    load_before = os.getloadavg()
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    embedded: dict[str, int] = {k: 0 for k in names}
    for row in rows[: args.limit]:
        for k in names:
            started, cpu_started = time.perf_counter(), time.process_time()
            before = scorers[k].embedded
            await scorers[k].score(row["claim"], [row["context"]])
            wall[k].append((time.perf_counter() - started) * 1000)
            cpu[k].append((time.process_time() - cpu_started) * 1000)
            embedded[k] += scorers[k].embedded > before
    embedder.close()

    def p(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 1)

    report: dict[str, Any] = {
        "bench": "grounding",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "rows": len(rows),
        "timed": min(args.limit, len(rows)),
        "threads": args.threads,
        "latency_per_answer_ms": {
            k: {
                "p50": p(wall[k], 0.5),
                "p95": p(wall[k], 0.95),
                "cpu_ms_p50": p(cpu[k], 0.5),
                "cpu_ms_mean": round(sum(cpu[k]) / len(cpu[k]), 1),
                "answers_embedded": embedded[k],
            }
            for k in names
        },
        "load_average_before": [round(v, 1) for v in load_before],
        "load_average_after": [round(v, 1) for v in os.getloadavg()],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
