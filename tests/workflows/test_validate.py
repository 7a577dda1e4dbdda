"""Apply-time checks: every reference, field and cycle problem is found, with where it is."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from keel.workflows.expr import Compiler
from keel.workflows.spec import WorkflowSpec
from keel.workflows.validate import Checker, order


def issues(data: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    spec = WorkflowSpec.model_validate({"name": "w", **data})
    return [(i.loc, i.message) for i in Checker(Compiler()).check(spec)]


def test_a_reference_to_an_unknown_step_is_named_with_its_place() -> None:
    found = issues(
        {
            "steps": [
                {"id": "a", "transform": {"value": "{{ input.q }}"}},
                {"id": "b", "transform": {"value": "{{ steps.nope.output }}"}},
            ]
        }
    )
    assert found == [(("steps", 1, "transform", "value"), "unknown step 'nope' (steps: a, b)")]


def test_an_unknown_field_of_a_typed_input_or_output_is_an_error() -> None:
    found = issues(
        {
            "input": {"type": "object", "properties": {"q": {"type": "string"}}},
            "steps": [
                {
                    "id": "get",
                    "http": {
                        "url": "http://x/{{ input.question }}",
                        "output_schema": {"type": "object", "properties": {"answer": {}}},
                    },
                },
                {"id": "use", "transform": {"value": "{{ steps.get.output.score }}"}},
            ],
        }
    )
    assert (("steps", 0, "http", "url"), "input: unknown field 'question' (declared: q)") in found
    assert (
        ("steps", 1, "transform", "value"),
        "steps.get.output: unknown field 'score' (declared: answer)",
    ) in found


def test_a_cycle_is_an_error_that_names_the_steps_on_it() -> None:
    found = issues(
        {
            "steps": [
                {"id": "a", "transform": {"value": "{{ steps.c.output }}"}},
                {"id": "b", "transform": {"value": "{{ steps.a.output }}"}},
                {"id": "c", "transform": {"value": "{{ steps.b.output }}"}},
            ]
        }
    )
    assert len(found) == 1
    assert "cycle" in found[0][1]
    assert "a" in found[0][1]
    assert "c" in found[0][1]


def test_steps_run_after_the_steps_they_read_whatever_the_order_written() -> None:
    spec = WorkflowSpec.model_validate(
        {
            "name": "w",
            "steps": [
                {"id": "last", "transform": {"value": "{{ steps.first.output }}"}},
                {"id": "first", "transform": {"value": 1}},
            ],
        }
    )
    assert [s.id for s in order(spec.steps, Compiler())] == ["first", "last"]


def test_item_outside_a_map_and_a_bad_schema_are_errors() -> None:
    found = issues(
        {
            "input": {"type": "objekt"},
            "steps": [
                {"id": "a", "transform": {"value": "{{ item }}"}},
            ],
        }
    )
    messages = [m for _, m in found]
    assert any("not a valid JSON Schema" in m for m in messages)
    assert "'item' exists only inside a map's steps" in messages


def test_a_branch_target_must_be_a_step_and_a_template_must_compile() -> None:
    found = issues(
        {
            "steps": [
                {"id": "pick", "branch": {"cases": [{"if": "input.x > 1", "then": ["ghost"]}]}},
                {"id": "t", "transform": {"value": "{{ input.x + }}"}},
            ]
        }
    )
    assert (
        ("steps", 0, "branch", "cases", 0, "then"),
        "unknown step 'ghost' (steps: pick, t)",
    ) in found
    assert any(loc == ("steps", 1, "transform", "value") for loc, _ in found)


def test_a_step_has_exactly_one_kind() -> None:
    with pytest.raises(ValidationError, match="exactly one kind"):
        WorkflowSpec.model_validate(
            {
                "name": "w",
                "steps": [{"id": "a", "transform": {"value": 1}, "http": {"url": "http://x"}}],
            }
        )


def test_a_field_named_like_a_method_reads_the_field() -> None:
    evaluate = Compiler().compile("{{ input.items }}")
    assert evaluate({"input": {"items": [1, 2]}}) == [1, 2]
