"""Items from JSONL and CSV files: every accepted shape, and a broken line named exactly."""

from __future__ import annotations

import pytest

from keel.errors import InvalidRequest
from keel.evals.items import parse_csv, parse_file, parse_jsonl


def test_jsonl_items_take_text_messages_or_variables() -> None:
    content = (
        b'{"input": "What is 2+2?", "expected": "4"}\n'
        b"\n"
        b'{"input": [{"role": "user", "content": "hi"}], "metadata": {"topic": "greeting"}}\n'
        b'{"input": {"variables": {"question": "why"}}, "context": "because"}\n'
    )
    items = parse_jsonl(content)
    assert [i.input for i in items] == [
        {"messages": [{"role": "user", "content": "What is 2+2?"}]},
        {"messages": [{"role": "user", "content": "hi"}]},
        {"variables": {"question": "why"}},
    ]
    assert items[0].expected == "4"
    assert items[1].metadata == {"topic": "greeting"}
    assert items[2].context == ["because"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"input": "ok"}\n{"input": "broken"\n', "line 2: not valid JSON"),
        (b'{"input": "ok"}\n\n[1, 2]\n', "line 3: a JSON list, not an object"),
        (b'{"input": "ok"}\n{"expected": "x"}\n', "line 2: input: Field required"),
        (b'{"input": {"messages": []}}\n', "line 1: input: input.messages must be a non-empty"),
        (b'{"input": "ok", "answer": "x"}\n', "line 1: answer: Extra inputs are not permitted"),
    ],
)
def test_a_broken_jsonl_line_is_named(content: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_jsonl(content)
    assert message in caught.value.message
    assert caught.value.param == "file"


def test_csv_items_with_input_or_variable_columns() -> None:
    plain = parse_csv(b"input,expected,meta.source\nWhat is 2+2?,4,quiz\n\nCapital of France?,"
                      b"Paris,quiz\n")  # fmt: skip
    assert [i.expected for i in plain] == ["4", "Paris"]
    assert plain[1].metadata == {"source": "quiz"}
    variables = parse_csv(b"var.city,expected\nParis,France\n")
    assert variables[0].input == {"variables": {"city": "Paris"}}


def test_a_broken_csv_row_is_named_by_its_line() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_csv(b"input,expected\na,b\nc,d,e\n")
    assert "line 3: 3 columns, the header has 2" in caught.value.message
    with pytest.raises(InvalidRequest) as header:
        parse_csv(b"question,answer\na,b\n")
    assert "line 1: the header needs an 'input' column" in header.value.message


def test_empty_and_non_utf8_files_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="no items"):
        parse_file("x.jsonl", b"\n\n")
    with pytest.raises(InvalidRequest, match="not UTF-8"):
        parse_file("x.csv", b"input\n\xff\xfe\n")
