"""The tuned-versus-base verdict on two pass lists: the gate judged by the evaluation
module's paired difference (interval and sign test)."""

from __future__ import annotations

from keel.finetune.compare import judge


def test_a_clear_gain_passes_the_gate_with_the_exact_sign_test() -> None:
    result = judge([False] * 40 + [True] * 10, [True] * 50, min_margin=0.1)
    assert result.passed
    assert (result.base_accuracy, result.tuned_accuracy) == (0.2, 1.0)
    assert result.difference.better == 40
    assert result.difference.worse == 0
    assert result.difference.p_value == 2 / 2**40  # exact two-sided binomial (McNemar)
    assert result.gate.gate.text == "delta(json_equal.pass_rate)>=0.1"


def test_the_gate_needs_the_whole_interval_above_the_margin() -> None:
    # +15 points on 20 items: the mean clears 0.1 but its interval reaches below it.
    base = [False] * 3 + [True] * 7 + [False] * 10
    small = judge(base, [True] * 10 + [False] * 10, min_margin=0.1)
    assert abs(small.difference.mean - 0.15) < 1e-9
    assert small.difference.low < 0.1
    assert not small.passed
    assert "95% CI" in small.gate.message


def test_no_gain_and_no_items_do_not_pass() -> None:
    assert not judge([True] * 5, [True] * 5, min_margin=0.0001).passed
    empty = judge([], [], min_margin=0.1)
    assert not empty.passed
    assert empty.difference.n == 0
