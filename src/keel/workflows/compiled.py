"""A workflow compiled once per version: steps in run order with their templates compiled,
and JSON Schema validators built, so a run does no parsing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from keel.errors import InvalidRequest
from keel.workflows.expr import Compiler, Evaluate
from keel.workflows.spec import StepSpec, WorkflowSpec
from keel.workflows.validate import Checker, WorkflowInvalid, order


@dataclass(slots=True)
class CompiledStep:
    spec: StepSpec
    id: str
    kind: str
    when: Evaluate | None
    values: dict[str, Evaluate]  # the kind's template fields, compiled
    output: Validator | None = None  # the declared output schema
    inner: list[CompiledStep] = field(default_factory=list)  # a map's steps, in order


@dataclass(slots=True)
class CompiledWorkflow:
    spec: WorkflowSpec
    version: int
    steps: list[CompiledStep]
    input: Validator
    output: Evaluate | None
    output_schema: Validator | None


class Validator:
    """A JSON Schema check whose failure is a 4xx naming the path and the rule."""

    __slots__ = ("_validator",)

    def __init__(self, schema: Mapping[str, Any]):
        self._validator = Draft202012Validator(schema)

    def problem(self, value: Any) -> str | None:
        error = next(iter(self._validator.iter_errors(value)), None)
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return f"at {where}: {error.message}"

    def check(self, value: Any, what: str, param: str = "input") -> None:
        problem = self.problem(value)
        if problem is not None:
            raise InvalidRequest(f"{what} does not match its JSON Schema {problem}", param=param)


def _values(step: StepSpec, compiler: Compiler) -> dict[str, Evaluate]:
    body = step.body
    kind = step.kind
    if kind == "llm":
        values = {"variables": compiler.compile(body.variables)}
        if body.messages is not None:
            values["messages"] = compiler.compile([m.model_dump() for m in body.messages])
        return values
    if kind == "retrieve":
        return {"query": compiler.compile(body.query)}
    if kind == "http":
        headers = {k: v for k, v in body.headers.items() if isinstance(v, str)}
        return {
            "url": compiler.compile(body.url),
            "body": compiler.compile(body.body),
            "headers": compiler.compile(headers),
        }
    if kind == "transform":
        return {"value": compiler.compile(body.value)}
    if kind == "guard":
        return {"text": compiler.compile(body.text)}
    if kind in ("workflow", "agent"):
        return {"input": compiler.compile(body.input)}
    if kind == "branch":
        return {f"case{i}": compiler.condition(c.if_) for i, c in enumerate(body.cases)}
    if kind == "map":
        values = {"over": compiler.condition(body.over)}
        if body.output is not None:
            values["output"] = compiler.compile(body.output)
        return values
    return {}


def _schema(step: StepSpec) -> Validator | None:
    body = step.body
    if step.kind == "http" and body.output_schema is not None:
        return Validator(body.output_schema)
    if step.kind == "transform" and body.schema_ is not None:
        return Validator(body.schema_)
    return None


def compile_steps(steps: list[StepSpec], compiler: Compiler) -> list[CompiledStep]:
    compiled = []
    for step in order(steps, compiler):
        when = compiler.condition(step.when) if step.when is not None else None
        item = CompiledStep(step, step.id, step.kind, when, _values(step, compiler), _schema(step))
        if step.kind == "map":
            item.inner = compile_steps(step.body.steps, compiler)
        compiled.append(item)
    return compiled


def compile_workflow(spec: WorkflowSpec, version: int, compiler: Compiler) -> CompiledWorkflow:
    """Checked and compiled; WorkflowInvalid lists what is wrong."""
    issues = Checker(compiler).check(spec)
    if issues:
        raise WorkflowInvalid(issues)
    return CompiledWorkflow(
        spec,
        version,
        compile_steps(spec.steps, compiler),
        Validator(spec.input),
        compiler.compile(spec.output) if spec.output is not None else None,
        Validator(spec.output_schema) if spec.output_schema is not None else None,
    )
