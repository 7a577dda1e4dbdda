"""The groundedness scorer: latency per answer and its verdicts on SciFact claims. Prints JSON.

    .venv/bin/python bench/grounding.py [--limit 300]
        [--data ../shared/data/groundedness/scifact_claims_train.jsonl]

Each row is one answer (the claim) against one retrieved context (title + abstract),
scored end to end by AlignmentScorer with the real MiniLM: sentence split, embedding,
features, the shipped logistic model. p50/p95 are per answer, on this machine.

The balanced accuracy and ROC-AUC printed here are in-sample (the shipped model was fitted
on these rows): the honest, cross-validated figures come from
`python -m training.grounding.train` and are the ones docs/knowledge.md reports.
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
    parser.add_argument("--limit", type=int, default=300, help="rows timed (all are scored)")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.data.open() if line.strip()]
    embedder = LocalEmbedder("all-minilm-l6-v2", minilm_dir())
    scorer = AlignmentScorer(embedder)
    await scorer.score("Warm-up.", ["Warm-up sentence."])
    timings: list[float] = []
    scores: list[float] = []
    for position, row in enumerate(rows):
        started = time.perf_counter()
        result = await scorer.score(row["claim"], [row["context"]])
        if position < args.limit:
            timings.append((time.perf_counter() - started) * 1000)
        scores.append(result.score)
    embedder.close()
    from sklearn.metrics import (  # type: ignore[import-untyped]
        balanced_accuracy_score,
        roc_auc_score,
    )

    labels = [int(row["label"]) for row in rows]
    threshold = scorer.model.threshold
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
        "in_sample": {
            "balanced_accuracy": round(
                float(balanced_accuracy_score(labels, [s >= threshold for s in scores])), 4
            ),
            "roc_auc": round(float(roc_auc_score(labels, scores)), 4),
            "threshold": threshold,
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
