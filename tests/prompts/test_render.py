from __future__ import annotations

from typing import Any

import pytest

from keel.errors import InvalidRequest
from keel.prompts.render import MAX_OUTPUT_CHARS, PromptSandbox, TemplateInvalid
from keel.prompts.spec import PromptContent

SANDBOX = PromptSandbox()


def content(*templates: str, variables: list[dict[str, Any]] | None = None,
            extra: bool = False) -> PromptContent:  # fmt: skip
    roles = ["system", "user", "assistant"]
    return PromptContent.model_validate(
        {
            "messages": [
                {"role": roles[i % 3], "content": text} for i, text in enumerate(templates)
            ],
            "variables": variables or [],
            "allow_extra_variables": extra,
        }
    )


def render(template: str, values: dict[str, Any] | None = None, **kwargs: Any) -> str:
    compiled = SANDBOX.compile(content(template, extra=True, **kwargs))
    return compiled.render(values or {})[0]["content"]


def test_variables_loops_conditions_and_filters_render() -> None:
    template = (
        "Hi {{ user.name|title }}!\n"
        "{% for item in items %}- {{ loop.index }}. {{ item|upper }}\n{% endfor %}"
        "{% if vip %}VIP{% else %}regular{% endif %} {{ items|join(', ') }} {{ 3 * 2 }}"
    )
    text = render(template, {"user": {"name": "ada"}, "items": ["a", "b"], "vip": True})
    assert text == "Hi Ada!\n- 1. A\n- 2. B\nVIP a, b 6"


def test_trailing_newlines_and_whitespace_are_kept() -> None:
    assert render("line\n\n") == "line\n\n"


def test_defaults_fill_optional_variables() -> None:
    variables = [{"name": "tone", "default": "friendly"}, {"name": "q"}]
    compiled = SANDBOX.compile(content("{{ tone }}: {{ q }}", variables=variables))
    assert compiled.render({"q": "why?"})[0]["content"] == "friendly: why?"
    assert compiled.render({"q": "why?", "tone": "terse"})[0]["content"] == "terse: why?"


@pytest.mark.parametrize(
    ("given", "fragment", "param"),
    [
        ({}, "missing required variable 'q'", "variables.q"),
        ({"q": "x", "extra": 1}, "unknown variable(s) 'extra'", "variables.extra"),
        ({"q": 3}, "variable 'q' must be string (got integer)", "variables.q"),
        ({"q": "x", "n": "3"}, "variable 'n' must be number (got string)", "variables.n"),
        ({"q": "x", "n": True}, "variable 'n' must be number (got boolean)", "variables.n"),
        ({"q": "x", "tags": "a"}, "variable 'tags' must be array (got string)", "variables.tags"),
    ],
)
def test_variables_are_checked_against_the_schema(
    given: dict[str, Any], fragment: str, param: str
) -> None:
    variables: list[dict[str, Any]] = [
        {"name": "q"},
        {"name": "n", "type": "number", "required": False},
        {"name": "tags", "type": "array", "required": False},
    ]
    compiled = SANDBOX.compile(content("{{ q }}", variables=variables))
    with pytest.raises(InvalidRequest) as caught:
        compiled.render(given)
    assert fragment in caught.value.message
    assert caught.value.param == param


def test_extra_variables_are_accepted_when_the_schema_allows_them() -> None:
    compiled = SANDBOX.compile(content("{{ anything }}", extra=True))
    assert compiled.render({"anything": 42})[0]["content"] == "42"


def test_a_template_using_an_undeclared_variable_is_refused_at_compile_time() -> None:
    with pytest.raises(TemplateInvalid) as caught:
        SANDBOX.compile(content("ok", "line one\n{{ who }}", variables=[]))
    assert caught.value.param == "messages[1].content"
    assert caught.value.lineno == 2
    assert "undeclared variable(s) who" in caught.value.message


def test_a_syntax_error_names_the_message_and_line() -> None:
    with pytest.raises(TemplateInvalid) as caught:
        SANDBOX.compile(content("fine", "one\ntwo\n{% if %}"))
    assert caught.value.index == 1
    assert caught.value.lineno == 3
    assert "template error on line 3" in caught.value.message


def test_strict_undefined_refuses_attribute_typos() -> None:
    with pytest.raises(InvalidRequest, match="has no attribute 'nmae'"):
        render("{{ user.nmae }}", {"user": {"name": "x"}})


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__ }}",
        "{{ x._private }}",
        "{{ x['__dict__'] }}",
        "{% extends 'base' %}",
        "{% from 'x' import y %}",
        "{% macro m() %}{% endmacro %}",
        "{% filter upper %}x{% endfilter %}",
        "{% set x %}y{% endset %}",
        "{% for i in [1] recursive %}{{ loop(i) }}{% endfor %}",
        "{{ x|attr('y') }}",
        "{{ [1, 2]|slice(2) }}",
        "{{ '%s'|format(1) }}",
    ],
)
def test_forbidden_constructs_are_refused_when_the_version_is_created(template: str) -> None:
    with pytest.raises(TemplateInvalid):
        SANDBOX.compile(content(template, extra=True))


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("{{ 'x'.center(10) }}", "calling 'center' is not allowed"),
        ("{{ '{}'.format(1) }}", "not allowed"),
        ("{{ '%s' % 1 }}", "'%' string formatting is not allowed"),
        ("{{ dict(a=1).update(b=2) }}", "unsafe"),
        ("{{ 'x' * 100000 }}", "the limit is"),
        ("{{ 2 ** 100000 }}", "bits"),
        ("{% for i in range(100000) %}{% endfor %}", "range of 100000 items"),
        ("{{ 'ab'|replace('a', 'x' * 60000) * 2 }}", "the limit is"),
        ("{{ ('x' * 60000) ~ ('y' * 60000) }}", "the limit is"),
        ("{{ 'x'|indent(100000) }}", "the limit is"),
        ("{{ [1]|tojson(indent=1000) }}", "indent"),
    ],
)
def test_expensive_or_unsafe_expressions_fail_at_render_with_a_400(
    template: str, fragment: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        render(template)
    assert fragment in caught.value.message
    assert caught.value.status == 400


def test_output_is_bounded_across_all_messages() -> None:
    half = "{{ 'x' * 40000 }}"
    compiled = SANDBOX.compile(content(half, half))
    with pytest.raises(InvalidRequest, match=f"longer than {MAX_OUTPUT_CHARS}"):
        compiled.render({})


def test_loop_iterations_are_bounded_across_nested_loops() -> None:
    with pytest.raises(InvalidRequest, match="more than 10000 iterations"):
        render("{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}", {"s": "x" * 200})


def test_a_compiled_version_renders_many_times_with_fresh_budgets() -> None:
    compiled = SANDBOX.compile(content("{% for i in range(9000) %}{% endfor %}done"))
    for _ in range(3):
        assert compiled.render({})[0]["content"] == "done"


@pytest.mark.timeout(10)
def test_slow_loops_are_stopped_by_the_time_limit() -> None:
    slow = "{% for i in range(5000) %}{% set y = s|list|sort|join %}{% endfor %}done"
    with pytest.raises(InvalidRequest, match="rendering took longer than 50 ms"):
        render(slow, {"s": "x" * 10000})


def test_filters_do_not_go_through_more_than_10000_items() -> None:
    with pytest.raises(InvalidRequest, match="the limit is 10000"):
        render("{{ s|list|sort|first }}", {"s": "x" * 20000})
    with pytest.raises(InvalidRequest, match="the limit is 10000"):
        render("{{ s|map('upper')|join }}", {"s": "x" * 20000})
    assert render("{{ s|list|sort|first }}", {"s": "ba" * 5000}) == "a"


def test_variables_are_bounded_in_size() -> None:
    compiled = SANDBOX.compile(content("{{ doc|truncate(20) }}", extra=True))
    assert compiled.render({"doc": "word " * 1000})[0]["content"] == "word word word..."
    with pytest.raises(InvalidRequest, match="the limit is 262144") as caught:
        compiled.render({"doc": "x" * 300_000})
    assert caught.value.param == "variables"
