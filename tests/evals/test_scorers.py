"""Each scorer's value on known outputs, verdicts derived from values, and bad specs named."""

from __future__ import annotations

from typing import Any

import pytest

from keel.errors import InvalidRequest
from keel.evals.scorers import Deps, Observation, build_scorers, catalog
from keel.evals.scorers.model import Judge


def observe(output: str, expected: Any = None, **extra: Any) -> Observation:
    return Observation(output=output, expected=expected,
                       input={"messages": [{"role": "user", "content": "q"}]}, context=None,
                       **extra)  # fmt: skip


async def value(spec: dict[str, Any], observation: Observation) -> tuple[float | None, bool]:
    (scorer,) = build_scorers([spec], Deps())
    measured = await scorer.measure(observation)
    return measured.value, scorer.passed(measured.value)


@pytest.mark.parametrize(
    ("spec", "output", "expected", "result"),
    [
        ({"type": "exact"}, " Paris ", "paris", (1.0, True)),
        ({"type": "exact", "case_sensitive": True}, "Paris", "paris", (0.0, False)),
        ({"type": "contains"}, "It is Paris, France.", "paris", (1.0, True)),
        ({"type": "contains", "value": "Lyon"}, "It is Paris.", None, (0.0, False)),
        ({"type": "regex", "pattern": r"^ANSWER: \w+"}, "ANSWER: yes", None, (1.0, True)),
        ({"type": "json"}, '```json\n{"a": 1}\n```', None, (1.0, True)),
        ({"type": "json"}, "{a: 1}", None, (0.0, False)),
        (
            {"type": "json_schema", "schema": {"type": "object", "required": ["a"]}},
            '{"b": 1}',
            None,
            (0.0, False),
        ),
        (
            {"type": "json_equal"},
            '```json\n{"b": [1, 2], "a": "x"}\n```',
            '{"a":"x","b":[1,2]}',
            (1.0, True),
        ),
        (
            {"type": "json_equal"},
            '{"a": "x", "b": [2, 1]}',
            '{"a": "x", "b": [1, 2]}',
            (0.0, False),
        ),
        ({"type": "json_equal"}, 'Sure: {"a": "x"}', '{"a": "x"}', (0.0, False)),
        ({"type": "json_equal"}, "  Paris,\n France ", "Paris, France", (1.0, True)),
        ({"type": "json_equal"}, "paris, france", "Paris, France", (0.0, False)),
        ({"type": "numeric", "tolerance": 0.01}, "The total is 3.16", "3.14", (0.0, False)),
        ({"type": "numeric", "tolerance": 0.01}, "The total is 3.145", "3.14", (1.0, True)),
        ({"type": "numeric", "tolerance": 0.1, "relative": True}, "about 1,050", 1000, (1.0, True)),
        ({"type": "secrets"}, "use key AKIAIOSFODNN7EXAMPLE now", None, (1.0, False)),
        ({"type": "pii"}, "Nothing personal here.", None, (0.0, True)),
        ({"type": "pii"}, "Write to jane.doe@example.com", None, (1.0, False)),
    ],
)
async def test_offline_scorers(
    spec: dict[str, Any], output: str, expected: Any, result: tuple[float, bool]
) -> None:
    assert await value(spec, observe(output, expected)) == result


async def test_rouge_and_bleu_rank_closer_answers_higher() -> None:
    reference = "the cat sat on the mat"
    for kind in ("rouge", "bleu"):
        same, _ = await value({"type": kind}, observe(reference, reference))
        near, _ = await value({"type": kind}, observe("the cat sat on a mat", reference))
        far, _ = await value({"type": kind}, observe("dogs bark loudly", reference))
        assert same is not None
        assert near is not None
        assert far is not None
        assert same == pytest.approx(1.0)
        assert same > near > far


async def test_latency_is_lower_is_better_and_the_threshold_moves_only_the_mark() -> None:
    fast = observe("x", latency_ms=120.0)
    assert await value({"type": "latency", "threshold": 200}, fast) == (120.0, True)
    assert await value({"type": "latency", "threshold": 100}, fast) == (120.0, False)


async def test_a_missing_expected_output_is_no_score_and_no_pass() -> None:
    assert await value({"type": "exact"}, observe("Paris")) == (None, False)


@pytest.mark.parametrize(
    ("specs", "param", "words"),
    [
        ([{"type": "exactly"}], "scorers[0].type", "unknown scorer 'exactly' (known: bias, bleu"),
        ([{"type": "exact"}, {"type": "regex"}], "scorers[1].pattern", "Field required"),
        ([{"type": "regex", "pattern": "("}], "scorers[0].pattern", "not a valid regular"),
        ([{"type": "exact", "tolerance": 1}], "scorers[0].tolerance", "has no option"),
        ([{"type": "exact"}, {"type": "exact"}], "scorers[1].name", "two scorers are named"),
        ([], "scorers", "at least one scorer"),
        (
            [{"type": "judge", "route": "nope", "rubric": "r"}],
            "scorers[0].route",
            "judge route 'nope' does not exist",
        ),
        ([{"type": "embedding"}], "scorers[0].type", "needs the embedding model"),
    ],
)
def test_bad_scorer_specs_name_the_field(
    specs: list[dict[str, Any]], param: str, words: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        build_scorers(specs, Deps(routes=frozenset({"smollm2"})))
    assert caught.value.param == param
    assert words in caught.value.message


def test_every_scorer_documents_its_range_direction_and_threshold() -> None:
    kinds = {entry["type"]: entry for entry in catalog()}
    assert {"exact", "contains", "regex", "json", "json_equal", "json_schema", "numeric",
            "embedding", "rouge", "bleu", "latency", "cost", "groundedness", "pii", "secrets",
            "toxicity", "judge"} <= set(kinds)  # fmt: skip
    assert kinds["latency"]["direction"] == "lower"
    assert kinds["exact"]["range"] == [0.0, 1.0]
    assert all(entry["summary"] for entry in kinds.values())


async def test_the_judge_asks_under_a_json_schema_and_derives_its_verdict() -> None:
    sent: list[dict[str, Any]] = []
    answers = iter(['{"score": 4}', '{"score": 2}', "not json"])

    async def chat(body: dict[str, Any], tags: dict[str, str]) -> str:
        sent.append(body)
        return next(answers)

    deps = Deps(chat=chat, routes=frozenset({"judge-model"}))
    (judge,) = build_scorers(
        [{"type": "judge", "route": "judge-model", "rubric": "Is it correct?"}], deps
    )
    assert isinstance(judge, Judge)
    good = await judge.measure(observe("Paris", "Paris"))
    bad = await judge.measure(observe("Lyon", "Paris"))
    broken = await judge.measure(observe("Lyon", "Paris"))
    assert (good.value, judge.passed(good.value)) == (0.75, True)
    assert (bad.value, judge.passed(bad.value)) == (0.25, False)
    assert broken.value is None
    assert broken.detail.startswith("parse failure")
    fmt = sent[0]["response_format"]
    assert fmt["type"] == "json_object"
    assert fmt["schema"]["properties"]["score"]["enum"] == [1, 2, 3, 4, 5]
    assert sent[0]["temperature"] == 0
    assert sent[0]["model"] == "judge-model"
    assert "Reference answer:\nParis" in sent[0]["messages"][1]["content"]


async def test_the_bias_probe_swaps_terms_and_compares_the_two_answers() -> None:
    asked: list[str] = []

    async def chat(body: dict[str, Any], tags: dict[str, str]) -> str:
        text = body["messages"][-1]["content"]
        asked.append(text)
        return "She is a great nurse." if "woman" in text.lower() else "He is an engineer."

    def probe_of(output: str, question: str) -> Observation:
        request = {"model": "m", "messages": [{"role": "user", "content": question}]}
        return Observation(output, None, {}, None, request=request)

    (probe,) = build_scorers([{"type": "bias"}], Deps(chat=chat))
    same = await probe.measure(probe_of("He is a great nurse.", "Describe a man"))
    assert asked[-1] == "Describe a woman"
    assert same.value == pytest.approx(1.0)  # "She is …" swapped back is the answer itself
    differs = await probe.measure(probe_of("He is a fine engineer.", "Describe a Man at work"))
    assert asked[-1] == "Describe a Woman at work"
    assert differs.value is not None
    assert differs.value < 0.8
    assert not probe.passed(differs.value)
    assert (await probe.measure(probe_of("x", "Hi there"))).value is None
