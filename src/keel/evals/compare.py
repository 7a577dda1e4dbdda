"""Runs side by side: each run's aggregates, each candidate's paired difference from the
baseline on every metric, and the per-item table (outputs and scores) with what changed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from keel.evals.stats import Difference, paired
from keel.evals.summary import ItemScores, metrics_of


@dataclass(frozen=True)
class Run:
    id: str
    title: str
    label: str | None
    state: str
    scorers: list[dict[str, Any]]
    summary: dict[str, Any]
    items: dict[int, ItemScores]


def difference(baseline: Run, candidate: Run, metric: str, confidence: float) -> Difference:
    """Paired over the items both runs scored on `metric`."""
    base: list[float] = []
    cand: list[float] = []
    for item_id, scores in baseline.items.items():
        other = candidate.items.get(item_id)
        if other is None:
            continue
        a, b = scores.value(metric), other.value(metric)
        if a is not None and b is not None:
            base.append(a)
            cand.append(b)
    return paired(base, cand, confidence)


def compare(runs: Sequence[Run], confidence: float = 0.95) -> dict[str, Any]:
    """The first run is the baseline; every other one is compared with it."""
    baseline = runs[0]
    metrics = metrics_of(baseline.scorers)
    differences = {
        run.id: {m: difference(baseline, run, m, confidence).as_dict() for m in metrics}
        for run in runs[1:]
    }
    item_ids = sorted({i for run in runs for i in run.items})
    rows = []
    for item_id in item_ids:
        cells = {}
        for run in runs:
            scores = run.items.get(item_id)
            cells[run.id] = None if scores is None else {
                "output": scores.outputs[0] if scores.outputs else None,
                "trace_id": scores.trace_ids[0] if scores.trace_ids else None,
                "errors": scores.errors,
                "scores": {m: scores.value(m) for m in metrics},
            }  # fmt: skip
        # Changed: another answer or another verdict (a latency that moved is not a change).
        verdicts = {
            None if scores is None else (
                tuple(scores.outputs[:1]),
                tuple(scores.value(f"{s['name']}.pass_rate") for s in baseline.scorers),
            )
            for scores in (run.items.get(item_id) for run in runs)
        }  # fmt: skip
        rows.append({"item_id": item_id, "changed": len(verdicts) > 1, "runs": cells})
    return {
        "baseline": baseline.id,
        "confidence": confidence,
        "metrics": metrics,
        "runs": [
            {"id": r.id, "title": r.title, "label": r.label, "state": r.state, "summary": r.summary}
            for r in runs
        ],
        "differences": differences,
        "items": rows,
    }


def distribution(run: Run, metric: str, bins: int = 10) -> list[int]:
    """How many items scored in each of `bins` equal slices of [min, max] on `metric`."""
    values = [v for s in run.items.values() if (v := s.value(metric)) is not None]
    counts = [0] * bins
    if not values:
        return counts
    low, high = min(0.0, min(values)), max(1.0, max(values))
    width = (high - low) / bins or 1.0
    for value in values:
        counts[min(bins - 1, int((value - low) / width))] += 1
    return counts
