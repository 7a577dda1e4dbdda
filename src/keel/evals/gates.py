"""CI gates: `accuracy>=0.8` on a run's own score, `delta(accuracy)>=-0.02` on its paired
difference from a baseline at a confidence level — a delta gate holds only when the whole
confidence interval does, so noise alone neither fails nor passes it."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from keel.errors import InvalidRequest
from keel.evals.stats import Difference

_GATE = re.compile(
    r"^\s*(?:(?P<delta>delta)\(\s*(?P<dm>[A-Za-z][\w.-]*)\s*\)|(?P<m>[A-Za-z][\w.-]*))"
    r"\s*(?P<op>>=|<=|>|<)\s*(?P<value>[-+]?\d+(?:\.\d+)?)\s*$"
)
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}


@dataclass(frozen=True, slots=True)
class Gate:
    text: str
    metric: str
    delta: bool
    op: str
    threshold: float


@dataclass(frozen=True, slots=True)
class GateResult:
    gate: Gate
    passed: bool
    observed: float | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"gate": self.gate.text, "passed": self.passed, "observed": self.observed,
                "message": self.message}  # fmt: skip


def parse_gate(text: str, index: int = 0) -> Gate:
    match = _GATE.match(text)
    if match is None:
        raise InvalidRequest(
            f"gates[{index}]: cannot read gate {text!r}; write METRIC>=NUMBER (e.g. "
            "accuracy>=0.8) or delta(METRIC)>=NUMBER (e.g. delta(accuracy)>=-0.02)",
            param=f"gates[{index}]",
            code="invalid_gate",
        )
    metric = match["dm"] or match["m"]
    return Gate(text.strip(), metric, bool(match["delta"]), match["op"], float(match["value"]))


def metric_value(summary: Mapping[str, Any], metric: str) -> float | None:
    """A run's aggregate for a gate's metric: NAME (mean), NAME.pass_rate, or pass_rate."""
    if metric == "pass_rate":
        value = summary.get("pass_rate")
        return None if value is None else float(value)
    name = metric.removesuffix(".pass_rate")
    found = (summary.get("metrics") or {}).get(name)
    if found is None:
        return None
    key = "pass_rate" if metric.endswith(".pass_rate") else "mean"
    value = found.get(key)
    return None if value is None else float(value)


def check(
    gate: Gate, summary: Mapping[str, Any], difference: Difference | None, has_baseline: bool
) -> GateResult:
    compare = _OPS[gate.op]
    if not gate.delta:
        value = metric_value(summary, gate.metric)
        if value is None:
            known = ["pass_rate", *(summary.get("metrics") or {})]
            return GateResult(gate, False, None, f"no metric '{gate.metric}' in the run "
                              f"(known: {', '.join(known)})")  # fmt: skip
        ok = compare(value, gate.threshold)
        return GateResult(gate, ok, value, f"{gate.metric} = {value:.4f}")
    if not has_baseline:
        return GateResult(gate, False, None, "a delta gate needs a baseline: pass --baseline")
    if difference is None or difference.n == 0:
        return GateResult(gate, False, None, f"no items scored on '{gate.metric}' in both runs")
    # The bound on the side the gate guards: a floor needs the low end above it.
    bound = difference.low if gate.op in (">=", ">") else difference.high
    ok = compare(bound, gate.threshold)
    return GateResult(
        gate, ok, difference.mean,
        f"Δ{gate.metric} = {difference.mean:+.4f}, {difference.confidence:.0%} CI "
        f"[{difference.low:+.4f}, {difference.high:+.4f}], sign test p = {difference.p_value:.3g}",
    )  # fmt: skip
