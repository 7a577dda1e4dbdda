"""Per-item results of a run folded into what reports show: each metric's mean and pass
rate over items (repeats averaged within an item first), and the share of items that pass
every scorer (`pass_rate`)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.jobs.model import Item

PASS_RATE = "pass_rate"


@dataclass
class ItemScores:
    """One dataset item's samples in a run: per metric, values and verdicts of each repeat."""

    item_id: int
    values: dict[str, list[float | None]] = field(default_factory=lambda: defaultdict(list))
    passed: dict[str, list[bool]] = field(default_factory=lambda: defaultdict(list))
    outputs: list[str] = field(default_factory=list)
    trace_ids: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def value(self, metric: str) -> float | None:
        """The item's score on `metric`: the mean of its repeats' values (None: none scored).
        `pass_rate` is the share of repeats that passed every scorer."""
        if metric == PASS_RATE:
            return self.all_passed()
        if metric.endswith(".pass_rate"):
            verdicts = self.passed.get(metric.removesuffix(".pass_rate"), [])
            samples = len(verdicts) + len(self.errors)
            return sum(verdicts) / samples if samples else None
        scored = [v for v in self.values.get(metric, []) if v is not None]
        return statistics.fmean(scored) if scored else None

    def all_passed(self) -> float:
        samples = len(self.outputs) + len(self.errors)
        if not samples:
            return 0.0
        every = [all(verdicts[i] for verdicts in self.passed.values())
                 for i in range(len(self.outputs))]  # fmt: skip
        return sum(every) / samples


def collect(items: Iterable[Item]) -> dict[int, ItemScores]:
    """Job items (one per item and repeat) grouped by dataset item."""
    found: dict[int, ItemScores] = {}
    for job_item in sorted(items, key=lambda i: i.ordinal):
        item_id = int(job_item.payload["item_id"])
        scores = found.setdefault(item_id, ItemScores(item_id))
        if job_item.state != "done" or job_item.result is None:
            error = job_item.error or {}
            scores.errors.append(str(error.get("message", "failed")))
            continue
        result = job_item.result
        scores.outputs.append(str(result.get("output", "")))
        scores.trace_ids.append(str(result.get("trace_id", "")))
        if isinstance(result.get("latency_ms"), int | float):
            scores.latencies.append(float(result["latency_ms"]))
        for metric, score in (result.get("scores") or {}).items():
            scores.values[metric].append(score.get("value"))
            scores.passed[metric].append(bool(score.get("passed")))
    return found


def metrics_of(scorers: Sequence[dict[str, Any]]) -> list[str]:
    return [PASS_RATE, *(s["name"] for s in scorers)]


def summarise(scorers: Sequence[dict[str, Any]], items: Iterable[Item]) -> dict[str, Any]:
    by_item = collect(items)
    metrics: dict[str, Any] = {}
    for scorer in scorers:
        name = scorer["name"]
        values = [v for s in by_item.values() if (v := s.value(name)) is not None]
        rates = [v for s in by_item.values() if (v := s.value(f"{name}.pass_rate")) is not None]
        metrics[name] = {
            **scorer,
            "mean": statistics.fmean(values) if values else None,
            "pass_rate": statistics.fmean(rates) if rates else None,
            "scored": len(values),
            "unscored": sum(1 for s in by_item.values() if s.value(name) is None),
        }
    passes = [s.all_passed() for s in by_item.values()]
    latencies = [v for s in by_item.values() for v in s.latencies]
    return {
        "items": len(by_item),
        "samples": sum(len(s.outputs) + len(s.errors) for s in by_item.values()),
        "errors": sum(len(s.errors) for s in by_item.values()),
        PASS_RATE: statistics.fmean(passes) if passes else None,
        "metrics": metrics,
        "latency_ms_p50": statistics.median(latencies) if latencies else None,
    }
