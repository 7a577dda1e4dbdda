"""The groundedness scorer: latency per answer and its verdicts on SciFact claims. Prints JSON.

    .venv/bin/python bench/grounding.py [--limit 100]
        [--data ../shared/data/groundedness/scifact_claims_train.jsonl]

Each row is one answer (the claim) against one retrieved context (title + abstract),
scored end to end by AlignmentScorer with the real MiniLM: sentence split, embedding,
features, the shipped logistic model. p50/p95 are per answer, on this machine.

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
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.data.open() if line.strip()]
    embedder = LocalEmbedder("all-minilm-l6-v2", minilm_dir())
    scorer = AlignmentScorer(embedder)
    await scorer.score("Warm-up.", ["Warm-up sentence."])
    timings: list[float] = []
    for row in rows[: args.limit]:
        started = time.perf_counter()
        await scorer.score(row["claim"], [row["context"]])
        timings.append((time.perf_counter() - started) * 1000)
    embedder.close()
    ordered = sorted(timings)
    report: dict[str, Any] = {
        "bench": "grounding",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "rows": len(rows),
        "latency_per_answer_ms": {
            "p50": round(ordered[len(ordered) // 2], 1),
            "p95": round(ordered[int(len(ordered) * 0.95)], 1),
            "timed": len(ordered),
        },
        "load_average": [round(v, 1) for v in os.getloadavg()],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
