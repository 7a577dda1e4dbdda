"""Training files are checked line by line before any compute: a broken line is named."""

from __future__ import annotations

import json

import pytest

from keel.errors import InvalidRequest
from keel.finetune.data import MIN_EXAMPLES, auto_epochs, check_count, parse_examples, split


def line(user: str, answer: str) -> str:
    return json.dumps(
        {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}
    )


def test_a_broken_line_is_named_with_its_number_and_the_fix() -> None:
    content = "\n".join([line("a", "b"), line("c", "d"), '{"messages": [', line("e", "f")])
    with pytest.raises(InvalidRequest) as caught:
        parse_examples(content.encode())
    assert caught.value.message.startswith("line 3: not valid JSON")
    assert "one JSON object per line" in caught.value.message


@pytest.mark.parametrize(
    ("row", "says"),
    [
        ({"prompt": "x"}, "no 'messages' list"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role is 'robot'"),
        ({"messages": [{"role": "user", "content": ""}]}, "content is missing, empty"),
        (
            {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]},
            "the last message is not the assistant's",
        ),
    ],
)
def test_each_kind_of_bad_line_says_what_is_wrong(row: dict[str, object], says: str) -> None:
    content = (line("a", "b") + "\n" + json.dumps(row)).encode()
    with pytest.raises(InvalidRequest) as caught:
        parse_examples(content)
    assert caught.value.message.startswith("line 2: ")
    assert says in caught.value.message


def test_too_few_examples_is_refused_with_the_minimum() -> None:
    examples = parse_examples("\n".join(line(f"q{i}", "a") for i in range(3)).encode())
    with pytest.raises(InvalidRequest) as caught:
        check_count(examples)
    assert f"at least {MIN_EXAMPLES}" in caught.value.message
    assert caught.value.code == "too_few_examples"


def test_the_validation_split_is_fixed_by_the_seed_and_never_empty() -> None:
    examples = parse_examples("\n".join(line(f"q{i}", "a") for i in range(20)).encode())
    train_a, valid_a = split(examples, 0.1, seed=1)
    _train_b, valid_b = split(examples, 0.1, seed=1)
    assert [e.number for e in valid_a] == [e.number for e in valid_b]
    assert len(valid_a) == 2
    assert len(train_a) == 18
    assert {e.number for e in train_a}.isdisjoint({e.number for e in valid_a})
    assert len(split(examples[:10], 0.01, seed=1)[1]) == 1


def test_auto_epochs_train_a_few_hundred_conversations_and_no_more_passes_than_needed() -> None:
    # A few hundred examples: one pass (what fits a CPU's quarter of an hour); a dozen: five.
    assert [auto_epochs(n) for n in (12, 50, 100, 200, 300, 5000)] == [5, 5, 3, 2, 1, 1]
