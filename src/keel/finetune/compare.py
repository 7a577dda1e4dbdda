"""The tuned version against its base: two per-item pass lists (each answer scored with the
evaluation module's `json_equal` scorer), their paired difference and gate judged by the
evaluation module (keel.evals.stats: bootstrap interval and exact sign test;
keel.evals.gates: the gate).

A job's own evaluation runs as an experiment (keel.finetune.evaluate); this is the same
verdict for answers collected elsewhere, such as the acceptance bench's. The gate is
`delta(json_equal.pass_rate)>=MARGIN`: it holds only when the whole confidence interval of
tuned minus base clears the margin, so a small lucky sample does not pass it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from keel.evals.gates import GateResult, check, parse_gate
from keel.evals.stats import Difference, paired

METRIC = "json_equal.pass_rate"


def margin_gate(min_margin: float) -> str:
    """The gate a tuned version ships on: `delta(json_equal.pass_rate)>=MARGIN`."""
    margin = f"{min_margin:.6f}".rstrip("0").rstrip(".")  # never in exponent form
    return f"delta({METRIC})>={margin}"


@dataclass(frozen=True, slots=True)
class Comparison:
    base_accuracy: float
    tuned_accuracy: float
    difference: Difference  # tuned - base, paired over the held-out items
    gate: GateResult

    @property
    def passed(self) -> bool:
        return self.gate.passed

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.difference.n,
            "base_accuracy": round(self.base_accuracy, 4),
            "tuned_accuracy": round(self.tuned_accuracy, 4),
            "difference": self.difference.as_dict(),
            "gate": self.gate.as_dict(),
        }


def judge(
    base: Sequence[bool], tuned: Sequence[bool], min_margin: float, confidence: float = 0.95
) -> Comparison:
    """The evaluation module's paired difference of two per-item pass lists, and its gate."""
    base_scores = [1.0 if b else 0.0 for b in base]
    tuned_scores = [1.0 if t else 0.0 for t in tuned]
    difference = paired(base_scores, tuned_scores, confidence)
    n = len(base_scores)
    tuned_accuracy = sum(tuned_scores) / n if n else 0.0
    gate = parse_gate(margin_gate(min_margin))
    summary = {"metrics": {"json_equal": {"mean": tuned_accuracy, "pass_rate": tuned_accuracy}}}
    result = check(gate, summary, difference, has_baseline=True)
    base_accuracy = sum(base_scores) / n if n else 0.0
    return Comparison(base_accuracy, tuned_accuracy, difference, result)
