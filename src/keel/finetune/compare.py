"""The tuned version against its base on held-out conversations: each answered by both,
scored against the reference, and the paired difference judged by the evaluation module
(keel.evals.stats: bootstrap interval and exact sign test; keel.evals.gates: the gate).

Answers come from a caller-given `answer(model_ref, messages)`, which goes through the
gateway like any call. The gate is an evaluation gate on the paired difference,
`delta(exact_json.pass_rate)>=MARGIN`: it holds only when the whole confidence interval of
tuned minus base clears the margin, so a small lucky sample does not pass it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from keel.evals.gates import GateResult, check, parse_gate
from keel.evals.stats import Difference, paired
from keel.finetune.data import Example

Answer = Callable[[str, list[dict[str, str]]], Awaitable[str]]
Scorer = Callable[[str, str], bool]
METRIC = "exact_json.pass_rate"


def _json_object(text: str) -> Any:
    text = text.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        return json.loads(text)
    except ValueError:
        return None


def json_match(answer: str, reference: str) -> bool:
    """The answer is the reference's JSON object (same keys and values, any spacing);
    plain text references are compared after trimming."""
    expected = _json_object(reference)
    if expected is None:
        return answer.strip() == reference.strip()
    return bool(_json_object(answer) == expected)


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
    margin = f"{min_margin:.6f}".rstrip("0").rstrip(".")  # never in exponent form
    gate = parse_gate(f"delta({METRIC})>={margin}")
    summary = {"metrics": {"exact_json": {"mean": tuned_accuracy, "pass_rate": tuned_accuracy}}}
    result = check(gate, summary, difference, has_baseline=True)
    base_accuracy = sum(base_scores) / n if n else 0.0
    return Comparison(base_accuracy, tuned_accuracy, difference, result)


async def compare(
    answer: Answer,
    base_ref: str,
    tuned_ref: str,
    examples: Sequence[Example],
    *,
    scorer: Scorer = json_match,
    min_margin: float = 0.1,
    confidence: float = 0.95,
) -> Comparison:
    base_scores, tuned_scores = [], []
    for example in examples:
        prompt, reference = list(example.messages[:-1]), example.messages[-1]["content"]
        base_scores.append(scorer(await answer(base_ref, prompt), reference))
        tuned_scores.append(scorer(await answer(tuned_ref, prompt), reference))
    return judge(base_scores, tuned_scores, min_margin, confidence)
