"""Paired differences: the bootstrap interval covers the true shift, is the same every time,
and the sign test counts only items that moved."""

from __future__ import annotations

import random

import pytest

from keel.errors import InvalidRequest
from keel.evals.gates import check, parse_gate
from keel.evals.stats import paired, sign_test


def test_identical_runs_differ_by_exactly_zero() -> None:
    scores = [1.0, 0.0, 1.0, 1.0]
    d = paired(scores, scores)
    assert (d.mean, d.low, d.high, d.better, d.worse, d.p_value) == (0.0, 0.0, 0.0, 0, 0, 1.0)


def test_a_regression_shows_as_an_interval_below_zero_and_is_reproducible() -> None:
    rng = random.Random(7)
    base = [1.0 if rng.random() < 0.9 else 0.0 for _ in range(200)]
    worse = [0.0 if (b == 1.0 and rng.random() < 0.3) else b for b in base]
    first, again = paired(base, worse), paired(base, worse)
    assert first == again  # seeded: a gate never flickers on the same results
    assert first.high < 0 < first.better + first.worse
    assert first.low < first.mean < first.high
    assert first.worse > 0
    assert first.better == 0
    assert first.p_value < 0.001


def test_sign_test_matches_the_binomial() -> None:
    assert sign_test(0, 0) == 1.0
    assert sign_test(5, 5) == 1.0
    assert sign_test(0, 6) == pytest.approx(2 / 64)


def summary(accuracy: float) -> dict[str, object]:
    return {"pass_rate": accuracy, "metrics": {"accuracy": {"mean": accuracy,
                                                            "pass_rate": accuracy}}}  # fmt: skip


def test_gates_on_values_and_on_differences() -> None:
    floor = parse_gate("accuracy>=0.8")
    assert check(floor, summary(0.85), None, False).passed
    assert not check(floor, summary(0.75), None, False).passed
    delta = parse_gate("delta(accuracy) >= -0.02")
    same = paired([1.0, 0.0, 1.0], [1.0, 0.0, 1.0])
    drop = paired([1.0] * 50, [1.0] * 40 + [0.0] * 10)
    assert check(delta, summary(0.8), same, True).passed
    failed = check(delta, summary(0.8), drop, True)
    assert not failed.passed
    assert "CI [" in failed.message
    assert "needs a baseline" in check(delta, summary(0.8), None, False).message
    missing = check(parse_gate("f1>=0.5"), summary(0.9), None, False)
    assert not missing.passed
    assert "no metric 'f1'" in missing.message


@pytest.mark.parametrize("text", ["accuracy => 0.8", "delta(accuracy>=1", "accuracy>=high", ""])
def test_unreadable_gates_say_how_to_write_one(text: str) -> None:
    with pytest.raises(InvalidRequest, match="write METRIC>=NUMBER"):
        parse_gate(text, 2)
