"""Values with templates in them, compiled once: `{{ expr }}` alone keeps the expression's
type (a list stays a list), other text with `{{ }}` renders to a string, the rest is constant.

Everything runs in the prompts' immutable sandbox: no attribute or method of Python
internals, no template loading, nothing that executes code. `references` lists the
`input.…` and `steps.…` paths a value reads, for the apply-time checks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.runtime import ChainableUndefined, Undefined

from keel.errors import InvalidRequest
from keel.prompts.render import PromptEnvironment

_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.DOTALL)
Evaluate = Callable[[Mapping[str, Any]], Any]
ROOTS = frozenset({"input", "steps", "item", "index", "env"})


class ExpressionError(InvalidRequest):
    """A template or expression failed to compile or to evaluate."""


@dataclass(frozen=True, slots=True)
class Reference:
    root: str  # input | steps | item | index
    path: tuple[str, ...]  # attribute and constant-key names after the root


class WorkflowEnvironment(PromptEnvironment):
    """The prompts' sandbox, where a mapping's key wins over a method of the same name:
    `input.items` is the input's `items` field, not dict.items."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


class Compiler:
    """One sandbox for every workflow of a process (it holds no per-run state).

    A field an input or output may leave out reads as None (`input.mode == 'x'` is false
    when there is no mode): fields a schema declares are checked at apply time instead.
    """

    def __init__(self) -> None:
        self.environment = WorkflowEnvironment()
        self.environment.undefined = ChainableUndefined

    def parse(self, source: str) -> nodes.Template:
        try:
            return self.environment.parse(source)
        except TemplateSyntaxError as exc:
            raise ExpressionError(f"template error on line {exc.lineno}: {exc.message}") from exc

    def compile(self, value: Any) -> Evaluate:
        """A function of the context that gives `value` with its templates filled in."""
        if isinstance(value, str):
            return self._string(value)
        if isinstance(value, dict):
            parts = [(key, self.compile(item)) for key, item in value.items()]
            if all(getattr(f, "constant", False) for _, f in parts):
                return _constant(value)
            return lambda ctx: {key: f(ctx) for key, f in parts}
        if isinstance(value, list):
            items = [self.compile(item) for item in value]
            if all(getattr(f, "constant", False) for f in items):
                return _constant(value)
            return lambda ctx: [f(ctx) for f in items]
        return _constant(value)

    def condition(self, source: str) -> Evaluate:
        """A condition, written with or without its `{{ }}`."""
        return self._expression(_bare(source), source)

    def _string(self, source: str) -> Evaluate:
        match = _EXPRESSION.match(source)
        if match is not None and "{{" not in match["expr"] and "}}" not in match["expr"]:
            return self._expression(match["expr"], source)
        if "{{" not in source and "{%" not in source:
            return _constant(source)
        try:
            template = self.environment.from_string(source)
        except TemplateSyntaxError as exc:
            raise ExpressionError(f"template error on line {exc.lineno}: {exc.message}") from exc
        render = template.render

        def evaluate(ctx: Mapping[str, Any]) -> Any:
            try:
                return render(ctx)
            except (UndefinedError, SecurityError, TypeError, ValueError) as exc:
                raise ExpressionError(f"template {source[:80]!r}: {exc}") from exc

        return evaluate

    def _expression(self, expr: str, source: str) -> Evaluate:
        try:
            compiled = self.environment.compile_expression(expr, undefined_to_none=False)
        except TemplateSyntaxError as exc:
            raise ExpressionError(f"expression {source[:80]!r}: {exc.message}") from exc

        def evaluate(ctx: Mapping[str, Any]) -> Any:
            try:
                result = compiled(**ctx)
            except (UndefinedError, SecurityError, TypeError, ValueError, KeyError) as exc:
                raise ExpressionError(f"expression {source[:80]!r}: {exc}") from exc
            return None if isinstance(result, Undefined) else result

        return evaluate

    def references(self, value: Any) -> list[Reference]:
        """Every `input.…`, `steps.…`, `item.…` path that `value`'s templates read."""
        found: list[Reference] = []
        if isinstance(value, dict):
            for item in value.values():
                found += self.references(item)
        elif isinstance(value, list):
            for item in value:
                found += self.references(item)
        elif isinstance(value, str) and ("{{" in value or "{%" in value):
            found += _references(self.parse(value))
        return found

    def condition_references(self, source: str) -> list[Reference]:
        return _references(self.parse("{{ " + _bare(source) + " }}"))


def _bare(source: str) -> str:
    match = _EXPRESSION.match(source)
    return match["expr"] if match is not None else source


def _constant(value: Any) -> Evaluate:
    def evaluate(_ctx: Mapping[str, Any]) -> Any:
        return value

    evaluate.constant = True  # type: ignore[attr-defined]
    return evaluate


def _references(tree: nodes.Template) -> list[Reference]:
    found: list[Reference] = []
    inner: set[int] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if id(node) in inner:
            continue
        path: list[str] = []
        current: nodes.Node = node
        while isinstance(current, nodes.Getattr | nodes.Getitem):
            inner.add(id(current))
            if isinstance(current, nodes.Getattr):
                path.append(current.attr)
            elif isinstance(current.arg, nodes.Const) and isinstance(current.arg.value, str):
                path.append(current.arg.value)
            else:
                path.clear()  # a computed key: the path below it is unknown
            current = current.node
        if isinstance(current, nodes.Name) and current.name in ROOTS:
            inner.add(id(current))
            found.append(Reference(current.name, tuple(reversed(path))))
    for name in tree.find_all(nodes.Name):  # a root used whole: {{ item }}
        if id(name) not in inner and name.name in ROOTS and name.ctx == "load":
            found.append(Reference(name.name, ()))
    return found
