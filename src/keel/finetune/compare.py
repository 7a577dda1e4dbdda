"""The tuned version against its base on held-out conversations: each answered by both,
scored against the reference, and the paired difference tested (exact McNemar test).

Answers come from a caller-given `answer(model_ref, messages)`, which goes through the
gateway like any call; the gate passes when the tuned version is better by at least
`min_margin` and the difference is significant at `alpha`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from keel.finetune.data import Example

Answer = Callable[[str, list[dict[str, str]]], Awaitable[str]]
Scorer = Callable[[str, str], bool]


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


def mcnemar_p(base_only: int, tuned_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs."""
    n = base_only + tuned_only
    if n == 0:
        return 1.0
    k = min(base_only, tuned_only)
    tail = float(sum(math.comb(n, i) for i in range(k + 1))) / float(2**n)
    return min(1.0, 2 * tail)


@dataclass(frozen=True, slots=True)
class Comparison:
    n: int
    base_accuracy: float
    tuned_accuracy: float
    margin: float
    base_only: int  # right by the base alone
    tuned_only: int  # right by the tuned version alone
    p_value: float
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired(
    base: Sequence[bool], tuned: Sequence[bool], min_margin: float, alpha: float
) -> Comparison:
    n = len(base)
    b_acc = sum(base) / n if n else 0.0
    t_acc = sum(tuned) / n if n else 0.0
    base_only = sum(1 for b, t in zip(base, tuned, strict=True) if b and not t)
    tuned_only = sum(1 for b, t in zip(base, tuned, strict=True) if t and not b)
    p = mcnemar_p(base_only, tuned_only)
    margin = t_acc - b_acc
    return Comparison(
        n,
        round(b_acc, 4),
        round(t_acc, 4),
        round(margin, 4),
        base_only,
        tuned_only,
        p,
        margin >= min_margin and p < alpha,
    )


async def compare(
    answer: Answer,
    base_ref: str,
    tuned_ref: str,
    examples: Sequence[Example],
    *,
    scorer: Scorer = json_match,
    min_margin: float = 0.1,
    alpha: float = 0.05,
) -> Comparison:
    base_scores, tuned_scores = [], []
    for example in examples:
        prompt, reference = list(example.messages[:-1]), example.messages[-1]["content"]
        base_scores.append(scorer(await answer(base_ref, prompt), reference))
        tuned_scores.append(scorer(await answer(tuned_ref, prompt), reference))
    return paired(base_scores, tuned_scores, min_margin, alpha)
