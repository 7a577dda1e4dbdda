"""The tuned-versus-base comparison: a JSON answer scorer and an exact paired test."""

from __future__ import annotations

from keel.finetune.compare import json_match, mcnemar_p, paired


def test_json_answers_match_by_content_not_spacing() -> None:
    reference = '{"sentiment": "positive", "product": "kettle"}'
    assert json_match('{"product":"kettle","sentiment":"positive"}', reference)
    assert json_match('```json\n{"sentiment": "positive", "product": "kettle"}\n```', reference)
    assert not json_match('{"sentiment": "negative", "product": "kettle"}', reference)
    assert not json_match("The review is positive.", reference)


def test_mcnemar_is_exact_and_symmetric() -> None:
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(0, 10) == mcnemar_p(10, 0)
    assert abs(mcnemar_p(0, 10) - 2 / 1024) < 1e-12
    assert mcnemar_p(5, 5) == 1.0


def test_the_gate_needs_both_a_margin_and_significance() -> None:
    base = [False] * 40 + [True] * 10
    tuned = [True] * 40 + [True] * 10
    result = paired(base, tuned, min_margin=0.1, alpha=0.05)
    assert result.passed
    assert result.margin == 0.8
    assert result.tuned_only == 40
    small = paired([False, True] * 10, [True, True] * 10, min_margin=0.9, alpha=0.05)
    assert not small.passed  # significant enough, but short of the margin asked for
