"""Dataset items as users write them (API bodies, JSONL and CSV files), checked into one shape.

An item's input is chat `messages` or prompt `variables` (a bare string is one user
message). A file with one bad line is refused whole, naming the line, so a dataset version
is never half-made.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from keel.errors import InvalidRequest

MAX_ITEMS = 100_000


class ItemIn(BaseModel):
    """One item: `input` (messages, variables or text), what the answer should be, context."""

    model_config = ConfigDict(extra="forbid")

    input: str | list[dict[str, Any]] | dict[str, Any] = Field(
        description="Chat messages, {'messages': [...]}, {'variables': {...}} or a plain text"
    )
    expected: Any = Field(None, description="The expected output (text, number or JSON)")
    context: list[str] | str | None = Field(
        None, description="Reference passages, for groundedness"
    )
    metadata: dict[str, Any] = Field(default_factory=dict)
    source_trace_id: str | None = Field(None, max_length=32)

    @field_validator("input")
    @classmethod
    def _input_shape(cls, value: Any) -> Any:
        normalise_input(value)
        return value


@dataclass(frozen=True, slots=True)
class NewItem:
    input: dict[str, Any]
    expected: Any = None
    context: list[str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    source_trace_id: str | None = None


def normalise_input(value: Any) -> dict[str, Any]:
    """{'messages': [...]} or {'variables': {...}}; ValueError saying what is wrong."""
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("input is empty")
        return {"messages": [{"role": "user", "content": value}]}
    if isinstance(value, list):
        value = {"messages": value}
    if not isinstance(value, dict):
        raise ValueError("input must be a text, a list of messages or an object")
    if "messages" in value:
        messages = value["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError("input.messages must be a non-empty list")
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise ValueError(f"input.messages[{index}] needs a role and a content")
            if "content" not in message:
                raise ValueError(f"input.messages[{index}] has no content")
        return {"messages": messages}
    if "variables" in value:
        if not isinstance(value["variables"], dict):
            raise ValueError("input.variables must be an object")
        return {"variables": value["variables"]}
    raise ValueError("input needs 'messages' or 'variables' (or be a plain text)")


def to_new_item(item: ItemIn) -> NewItem:
    context = item.context
    if isinstance(context, str):
        context = [context]
    return NewItem(
        normalise_input(item.input), item.expected, context, item.metadata, item.source_trace_id
    )


def _line_error(number: int, problem: str) -> InvalidRequest:
    return InvalidRequest(f"line {number}: {problem}", param="file", code="invalid_dataset_line")


def _checked(number: int, data: Any) -> NewItem:
    if not isinstance(data, dict):
        raise _line_error(number, f"a JSON {type(data).__name__}, not an object")
    try:
        return to_new_item(ItemIn.model_validate(data))
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "item"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise _line_error(number, f"{where}: {message}") from None


def parse_jsonl(content: bytes) -> list[NewItem]:
    """One item per non-empty line: {"input": …, "expected": …, "context": …, "metadata": …}."""
    text = _text(content)
    items: list[NewItem] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise _line_error(
                number, f"not valid JSON ({error}); write one object per line"
            ) from None
        items.append(_checked(number, data))
        _bounded(len(items))
    return _some(items)


def parse_csv(content: bytes) -> list[NewItem]:
    """A header row, then one item per row: an `input` column (text) or one column per
    variable named `var.NAME`; `expected`, `context` and `meta.NAME` columns are optional."""
    reader = csv.reader(io.StringIO(_text(content)))
    try:
        header = next(reader)
    except StopIteration:
        raise InvalidRequest("the file is empty", param="file", code="invalid_file") from None
    header = [name.strip() for name in header]
    variables = [name for name in header if name.startswith("var.")]
    if "input" not in header and not variables:
        raise _line_error(1, "the header needs an 'input' column or 'var.NAME' columns")
    items: list[NewItem] = []
    for row in reader:
        number = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise _line_error(number, f"{len(row)} columns, the header has {len(header)}")
        cells = dict(zip(header, row, strict=True))
        data: dict[str, Any] = {
            "input": (
                {"variables": {name[4:]: cells[name] for name in variables}}
                if variables
                else cells["input"]
            ),
            "metadata": {k[5:]: v for k, v in cells.items() if k.startswith("meta.")},
        }
        if cells.get("expected"):
            data["expected"] = cells["expected"]
        if cells.get("context"):
            data["context"] = cells["context"]
        items.append(_checked(number, data))
        _bounded(len(items))
    return _some(items)


def parse_file(filename: str, content: bytes) -> list[NewItem]:
    if filename.lower().endswith(".csv"):
        return parse_csv(content)
    return parse_jsonl(content)


def _text(content: bytes) -> str:
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InvalidRequest(
            f"the file is not UTF-8 text (byte {error.start}); save it as UTF-8",
            param="file",
            code="invalid_file",
        ) from None


def _bounded(count: int) -> None:
    if count > MAX_ITEMS:
        raise InvalidRequest(
            f"more than {MAX_ITEMS} items in one version; split the file",
            param="file",
            code="invalid_file",
        )


def _some(items: list[NewItem]) -> list[NewItem]:
    if not items:
        raise InvalidRequest("the file has no items", param="file", code="invalid_file")
    return items
