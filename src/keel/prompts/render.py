"""Sandboxed Jinja rendering of prompt templates, with hard limits on output, loops and time.

Templates are checked and compiled once per version; a render cannot reach Python
internals, load other templates, or run past its output, iteration and time budgets.
"""

from __future__ import annotations

import gc
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from contextvars import ContextVar
from dataclasses import dataclass
from itertools import islice
from typing import Any

import orjson
from jinja2 import BaseLoader, StrictUndefined, TemplateError, TemplateSyntaxError, nodes
from jinja2.environment import Environment, Template
from jinja2.exceptions import SecurityError, TemplateNotFound
from jinja2.meta import find_undeclared_variables
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, LoopContext, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import pass_eval_context
from jinja2.visitor import NodeTransformer

from keel.errors import InvalidRequest
from keel.prompts.spec import PromptContent, VariableSpec, has_type, json_type

MAX_OUTPUT_CHARS = 64 * 1024
MAX_VARIABLES_CHARS = 256 * 1024
MAX_LOOP_ITERATIONS = 10_000
MAX_ITEMS = 10_000
MAX_INT_BITS = 4096
RENDER_SECONDS = 0.05

_LOOP = "_keel_loop"
_CONCAT = "_keel_concat"

_FORBIDDEN: dict[type[nodes.Node], str] = {
    nodes.Extends: "{% extends %} is not allowed: a prompt template cannot load others",
    nodes.Include: "{% include %} is not allowed: a prompt template cannot load others",
    nodes.Import: "{% import %} is not allowed: a prompt template cannot load others",
    nodes.FromImport: "{% from … import %} is not allowed: a prompt template cannot load others",
    nodes.Macro: "{% macro %} is not allowed in prompt templates",
    nodes.CallBlock: "{% call %} is not allowed in prompt templates",
    nodes.Block: "{% block %} is not allowed in prompt templates",
    nodes.FilterBlock: "{% filter %} blocks are not allowed; apply the filter to a value",
    nodes.AssignBlock: "{% set %}…{% endset %} blocks are not allowed; use {% set x = … %}",
    nodes.NSRef: "namespace assignment is not allowed in prompt templates",
}

_STR_METHODS = frozenset((
    "lower", "upper", "title", "capitalize", "casefold", "swapcase", "strip", "lstrip",
    "rstrip", "startswith", "endswith", "split", "rsplit", "splitlines", "count", "find",
    "rfind", "index", "rindex", "partition", "rpartition", "removeprefix", "removesuffix",
    "replace", "isalnum", "isalpha", "isdigit", "isnumeric", "isspace", "islower", "isupper",
    "istitle",
))  # fmt: skip
_METHODS: dict[type, frozenset[str]] = {
    str: _STR_METHODS,
    dict: frozenset({"get", "items", "keys", "values"}),
    list: frozenset({"count", "index"}),
    tuple: frozenset({"count", "index"}),
    LoopContext: frozenset({"cycle", "changed"}),
}


class TemplateInvalid(InvalidRequest):
    """A message's template does not compile or uses something the sandbox forbids."""

    def __init__(self, index: int, lineno: int, problem: str):
        where = f"messages[{index}].content"
        super().__init__(f"{where}: template error on line {lineno}: {problem}", param=where)
        self.index = index
        self.lineno = lineno
        self.problem = problem


class RenderLimitExceeded(SecurityError):
    """A render went past its output, iteration or time budget."""


class _Budget:
    __slots__ = ("cpu_deadline", "gc_started", "iterations", "paused", "wall_deadline")

    def __init__(self, seconds: float):
        # Measured in the thread's CPU time, so a render preempted on a busy machine is not
        # taken for a hang; the wall clock is read first because it is ten times cheaper,
        # and CPU time never runs ahead of it.
        self.wall_deadline = time.perf_counter() + seconds
        self.cpu_deadline = time.thread_time() + seconds
        self.iterations = 0
        self.paused = 0.0
        self.gc_started = 0.0

    def on_gc(self, phase: str, _info: dict[str, int]) -> None:
        # A full collection can stop the process for tens of milliseconds; that is not the
        # template's doing, so it does not count against the render.
        if phase == "start":
            self.gc_started = time.perf_counter()
        else:
            self.paused += time.perf_counter() - self.gc_started

    def check_time(self) -> None:
        paused = self.paused
        if (
            time.perf_counter() > self.wall_deadline + paused
            and time.thread_time() > self.cpu_deadline + paused
        ):
            raise RenderLimitExceeded(
                f"rendering took longer than {RENDER_SECONDS * 1000:.0f} ms and was stopped"
            )

    def tick(self) -> None:
        self.iterations += 1
        if self.iterations > MAX_LOOP_ITERATIONS:
            raise RenderLimitExceeded(
                f"loops ran more than {MAX_LOOP_ITERATIONS} iterations in one render"
            )
        self.check_time()


# The running render's budget; set around each render, read by the guards below.
_ACTIVE: ContextVar[_Budget | None] = ContextVar("keel_prompt_budget", default=None)


def _check_time() -> None:
    budget = _ACTIVE.get()
    if budget is not None:  # None while Jinja folds constants at compile time
        budget.check_time()


def _too_long(size: int, what: str) -> None:
    if size > MAX_OUTPUT_CHARS:
        raise RenderLimitExceeded(
            f"{what} would make {size} new characters; the limit is {MAX_OUTPUT_CHARS}"
        )


def _length(value: Any) -> int:
    return len(value) if isinstance(value, str | list | tuple) else len(str(value))


# Globals and filters a template may use. Each bounds the size of what it makes before
# making it, so no single expression can allocate much more than the output limit.


def _range(*args: int) -> range:
    if not all(isinstance(a, int) for a in args):
        raise SecurityError("range() takes integers")
    result = range(*args)
    if len(result) > MAX_LOOP_ITERATIONS:
        raise RenderLimitExceeded(
            f"range of {len(result)} items is over the limit of {MAX_LOOP_ITERATIONS}"
        )
    return result


def _loop(iterable: Iterable[Any]) -> Iterator[Any]:
    budget = _ACTIVE.get()
    for item in iterable:
        if budget is not None:
            budget.tick()
        yield item


def _capped(value: Any) -> Any:
    """The value a filter iterates, refused when it holds more than MAX_ITEMS items."""
    if not isinstance(value, Sized):
        value = list(islice(value, MAX_ITEMS + 1))  # a generator from map() or select()
    if len(value) > MAX_ITEMS:
        raise RenderLimitExceeded(
            f"a filter would go through more than {MAX_ITEMS} items; the limit is {MAX_ITEMS}"
        )
    return value


def _guarded(filter_: Callable[..., Any], consumes: bool) -> Callable[..., Any]:
    """The filter, behind the time check (and, for filters that go through a whole
    collection, the item limit)."""
    pass_arg = getattr(filter_, "jinja_pass_arg", None)
    first = 0 if pass_arg is None else 1  # after the context Jinja passes in

    def guarded(*args: Any, **kwargs: Any) -> Any:
        _check_time()
        if consumes and len(args) > first:
            args = (*args[:first], _capped(args[first]), *args[first + 1 :])
        return filter_(*args, **kwargs)

    if pass_arg is not None:
        setattr(guarded, "jinja_pass_arg", pass_arg)  # noqa: B010 - Jinja reads this mark
    return guarded


def _concat(*parts: Any) -> str:
    texts = [str(part) for part in parts]
    _too_long(sum(len(t) for t in texts), "'~'")
    return "".join(texts)


def _bounded_replace(value: str, old: str, new: str, count: int | None = None) -> None:
    hits = value.count(old) if old else len(value) + 1
    if count is not None and count >= 0:
        hits = min(hits, count)
    _too_long(hits * (len(new) - len(old)), "replace")  # what it adds to the text


def _bounded_filters(original: Mapping[str, Callable[..., Any]]) -> dict[str, Any]:
    """Wrappers of the filters whose output size depends on an argument, checked first."""

    @pass_eval_context
    def join(ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
        items = list(value)  # a generator would be used up by the size check otherwise
        size = sum(_length(i) for i in items) + len(str(d)) * max(len(items) - 1, 0)
        _too_long(size, "join")
        result: str = original["join"](ctx, items, d, attribute)
        return result

    @pass_eval_context
    def replace(ctx: EvalContext, s: str, old: str, new: str, count: int | None = None) -> str:
        _bounded_replace(str(s), str(old), str(new), count)
        result: str = original["replace"](ctx, s, old, new, count)
        return result

    def center(value: str, width: int = 80) -> str:
        if not isinstance(width, int):
            raise SecurityError("center() takes an integer width")
        _too_long(width, "center")
        result: str = original["center"](value, width)
        return result

    def indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
        pad = len(width) if isinstance(width, str) else width
        if not isinstance(pad, int):
            raise SecurityError("indent() takes an integer or string width")
        text = str(s)
        _too_long((text.count("\n") + 1) * max(pad, 0), "indent")  # what it adds
        result: str = original["indent"](s, width, first, blank)
        return result

    def batch(value: Iterable[Any], linecount: int, fill_with: Any = None) -> Any:
        if not isinstance(linecount, int) or linecount > MAX_LOOP_ITERATIONS:
            raise RenderLimitExceeded(
                f"batch() size must be an integer up to {MAX_LOOP_ITERATIONS}"
            )
        return original["batch"](value, linecount, fill_with)

    @pass_eval_context
    def tojson(ctx: EvalContext, value: Any, indent: int | None = None) -> Any:
        if indent is not None and (not isinstance(indent, int) or not 0 <= indent <= 8):
            raise SecurityError("tojson() indent must be an integer from 0 to 8")
        return original["tojson"](ctx, value, indent)

    return {"join": join, "replace": replace, "center": center, "indent": indent,
            "batch": batch, "tojson": tojson}  # fmt: skip


_SAFE_FILTERS = frozenset((
    "abs", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "filesizeformat",
    "first", "float", "forceescape", "groupby", "int", "items", "last", "length", "list",
    "lower", "map", "max", "min", "pprint", "reject", "rejectattr", "reverse", "round",
    "safe", "select", "selectattr", "sort", "string", "striptags", "sum", "title", "trim",
    "truncate", "unique", "upper", "urlencode", "wordcount", "wordwrap", "xmlattr",
))  # fmt: skip


# Filters that go through a whole collection (at Python speed, for most of them).
_CONSUMING_FILTERS = frozenset((
    "batch", "dictsort", "groupby", "join", "last", "list", "max", "min", "reverse", "sort",
    "sum", "unique",
))  # fmt: skip


class _RefuseAll(BaseLoader):
    def get_source(self, environment: Environment, template: str) -> tuple[str, str, Any]:
        raise TemplateNotFound(template, "prompt templates cannot load other templates")


class _Guard(NodeTransformer):
    """Route every loop through the iteration budget and every '~' through a size check."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Call(
            nodes.Name(_LOOP, "load"), [node.iter], [], None, None, lineno=node.lineno
        )
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Call(
            nodes.Name(_CONCAT, "load"), list(node.nodes), [], None, None, lineno=node.lineno
        )


class PromptEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with calls, operators and filters narrowed to a safe list."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self) -> None:
        super().__init__(
            loader=_RefuseAll(),
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            auto_reload=False,
        )
        self.globals.clear()
        self.globals.update({"range": _range, "dict": dict, _LOOP: _loop, _CONCAT: _concat})
        allowed = {name: self.filters[name] for name in _SAFE_FILTERS}
        allowed |= _bounded_filters(self.filters)
        self.filters = {
            name: _guarded(filter_, name in _CONSUMING_FILTERS) for name, filter_ in allowed.items()
        }
        self._callables = frozenset(id(f) for f in (_range, dict, _loop, _concat))

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _check_time()
        if isinstance(obj, Undefined):
            obj._fail_with_undefined_error()
        if id(obj) not in self._callables:
            owner = getattr(obj, "__self__", None)
            name = getattr(obj, "__name__", "")
            allowed = isinstance(obj, types.BuiltinMethodType | types.MethodType) and any(
                isinstance(owner, kind) and name in methods for kind, methods in _METHODS.items()
            )
            if not allowed:
                raise SecurityError(f"calling {name or type(obj).__name__!r} is not allowed")
            if name == "replace" and isinstance(owner, str):
                _bounded_replace(owner, *args, **kwargs)
        return super().call(context, obj, *args, **kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "%" and isinstance(left, str):
            raise SecurityError("'%' string formatting is not allowed; use {{ }} and filters")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int):
                    _too_long(len(seq) * max(times, 0), "'*'")
            if isinstance(left, int) and isinstance(right, int):
                self._int_bits(left.bit_length() + right.bit_length())
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
                self._int_bits(left.bit_length() * right)
        elif operator == "+" and isinstance(left, str | list | tuple) and type(left) is type(right):
            _too_long(len(left) + len(right), "'+'")
        return super().call_binop(context, operator, left, right)

    @staticmethod
    def _int_bits(bits: int) -> None:
        if bits > MAX_INT_BITS:
            raise RenderLimitExceeded(f"a number over {MAX_INT_BITS} bits would be computed")


def _check_tree(tree: nodes.Template) -> None:
    for node in tree.find_all(nodes.Node):
        message = _FORBIDDEN.get(type(node))
        if isinstance(node, nodes.For) and node.recursive:
            message = "recursive loops are not allowed in prompt templates"
        name = None
        if isinstance(node, nodes.Name):
            name = node.name
        elif isinstance(node, nodes.Getattr):
            name = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            name = node.arg.value if isinstance(node.arg.value, str) else None
        if name is not None and name.startswith("_"):
            message = f"'{name}': names starting with '_' are not accessible in templates"
        if message:
            raise TemplateSyntaxError(message, node.lineno)


@dataclass(frozen=True)
class CompiledMessage:
    role: str
    template: Template
    source: str


class CompiledPrompt:
    """A version's checked, compiled templates and variables schema, ready to render."""

    def __init__(self, content: PromptContent, messages: list[CompiledMessage]):
        self.content = content
        self.messages = messages
        self._specs: dict[str, VariableSpec] = {v.name: v for v in content.variables}

    def bind(self, given: Mapping[str, Any], param: str) -> dict[str, Any]:
        """The variables to render with: given values checked against the schema, defaults."""
        unknown = sorted(set(given) - set(self._specs))
        if unknown and not self.content.allow_extra_variables:
            declared = ", ".join(sorted(self._specs)) or "none"
            raise InvalidRequest(
                f"unknown variable(s) {', '.join(repr(u) for u in unknown)} (declared: "
                f"{declared}); remove them, or allow extra variables in the prompt",
                param=f"{param}.{unknown[0]}",
            )
        for name in unknown:
            if name.startswith("_"):
                raise InvalidRequest(
                    f"variable names may not start with '_' (got {name!r})",
                    param=f"{param}.{name}",
                )
        size = len(orjson.dumps(given, default=str))
        if size > MAX_VARIABLES_CHARS:
            raise InvalidRequest(
                f"the variables are {size} bytes of JSON; the limit is {MAX_VARIABLES_CHARS} "
                f"(the rendered prompt may be at most {MAX_OUTPUT_CHARS} characters anyway)",
                param=param,
            )
        values = dict(given)
        for spec in self.content.variables:
            if spec.name in given:
                if not has_type(given[spec.name], spec.type):
                    raise InvalidRequest(
                        f"variable '{spec.name}' must be {spec.type} "
                        f"(got {json_type(given[spec.name])})",
                        param=f"{param}.{spec.name}",
                    )
            elif spec.required:
                raise InvalidRequest(
                    f"missing required variable '{spec.name}' ({spec.type}); add it to {param}",
                    param=f"{param}.{spec.name}",
                )
            elif spec.default is not None:
                values[spec.name] = spec.default
        return values

    def render(self, given: Mapping[str, Any], *, param: str = "variables") -> list[dict[str, str]]:
        """The chat messages, with variables checked first; every failure is a 400."""
        values = self.bind(given, param)
        budget = _Budget(RENDER_SECONDS)
        token = _ACTIVE.set(budget)
        gc.callbacks.append(budget.on_gc)
        try:
            return self._render(values, param)
        finally:
            gc.callbacks.remove(budget.on_gc)
            _ACTIVE.reset(token)

    def _render(self, values: dict[str, Any], param: str) -> list[dict[str, str]]:
        rendered: list[dict[str, str]] = []
        total = 0
        for index, message in enumerate(self.messages):
            parts: list[str] = []
            template = message.template
            try:
                # Chunk by chunk, so a long output stops at the limit rather than after it.
                for chunk in template.root_render_func(template.new_context(values)):
                    total += len(chunk)
                    if total > MAX_OUTPUT_CHARS:
                        raise RenderLimitExceeded(
                            f"the rendered prompt is longer than {MAX_OUTPUT_CHARS} characters"
                        )
                    parts.append(chunk)
            except InvalidRequest:
                raise
            except Exception as exc:  # any failure inside a template is the template's input
                raise InvalidRequest(
                    f"messages[{index}] failed to render: {_describe(exc)}", param=param
                ) from exc
            rendered.append({"role": message.role, "content": "".join(parts)})
        return rendered


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, TemplateError):
        return text
    return f"{type(exc).__name__}: {text}"


class PromptSandbox:
    """Checks and compiles prompt templates; one per process is plenty (it holds no state)."""

    def __init__(self) -> None:
        self.environment = PromptEnvironment()

    def compile(self, content: PromptContent) -> CompiledPrompt:
        """Compile every message; a bad template is a 400 naming the message and line."""
        declared = {v.name for v in content.variables}
        builtins = set(self.environment.globals)
        compiled: list[CompiledMessage] = []
        for index, message in enumerate(content.messages):
            try:
                tree = self.environment.parse(message.content)
                _check_tree(tree)
                unknown = find_undeclared_variables(tree) - builtins - {"loop"} - declared
                if unknown and not content.allow_extra_variables:
                    lines = [n.lineno for n in tree.find_all(nodes.Name) if n.name in unknown]
                    raise TemplateInvalid(
                        index,
                        min(lines, default=1),
                        f"undeclared variable(s) {', '.join(sorted(unknown))}; declare them "
                        "under variables (or allow extra variables)",
                    )
                tree = _Guard().visit(tree)
                tree.set_environment(self.environment)
                template = self.environment.from_string(tree)
            except TemplateSyntaxError as exc:
                raise TemplateInvalid(index, exc.lineno, exc.message or "invalid template") from exc
            compiled.append(CompiledMessage(message.role, template, message.content))
        return CompiledPrompt(content, compiled)
