"""Apply-time checks of a workflow: step references, fields against schemas, cycles.

Every problem is an `Issue` with the location of the value at fault (a path into the
workflow's YAML), so `keel apply` can print file:line. `order` is the run order the engine
follows: each step after the steps it reads, otherwise in the order written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator, SchemaError  # type: ignore[import-untyped]

from keel.workflows.expr import Compiler, ExpressionError, Reference
from keel.workflows.spec import StepSpec, WorkflowSpec

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Issue:
    loc: Loc
    message: str

    def __str__(self) -> str:
        where = ".".join(str(p) for p in self.loc)
        return f"{where}: {self.message}" if where else self.message


class WorkflowInvalid(Exception):
    def __init__(self, issues: list[Issue]):
        self.issues = issues
        super().__init__("; ".join(str(i) for i in issues))


def check_schema(schema: Mapping[str, Any] | None, loc: Loc, issues: list[Issue]) -> None:
    if schema is None:
        return
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        issues.append(Issue(loc, f"not a valid JSON Schema: {exc.message}"))


def output_schema(step: StepSpec) -> Mapping[str, Any] | None:
    """What a step's output is declared to look like, when it says so."""
    body = step.body
    if step.kind == "llm":
        text = {"type": "string"}
        if body.schema_ is None:
            return {"type": "object", "properties": {"text": text}}
        return {"type": "object", "properties": {"text": text, "json": body.schema_}}
    if step.kind == "retrieve":
        return {
            "type": "object",
            "properties": {"hits": {"type": "array"}, "context": {"type": "string"}},
        }
    if step.kind == "http":
        return body.output_schema  # type: ignore[no-any-return]
    if step.kind == "transform":
        return body.schema_  # type: ignore[no-any-return]
    return None


def _field_problem(schema: Mapping[str, Any] | None, path: tuple[str, ...]) -> str | None:
    """The first field of `path` that `schema` says cannot exist; None when all may."""
    for name in path:
        if schema is None or not isinstance(schema, Mapping):
            return None
        properties = schema.get("properties")
        if not isinstance(properties, Mapping):
            return None
        if name not in properties:
            if schema.get("additionalProperties", True) is False or properties:
                known = ", ".join(sorted(properties)) or "none"
                return f"unknown field {name!r} (declared: {known})"
            return None
        schema = properties[name]
    return None


class Checker:
    def __init__(
        self,
        compiler: Compiler,
        workflows: Iterable[str] = (),
        agents: Iterable[str] = (),
        check_calls: bool = False,
    ):
        self.compiler = compiler
        self.workflows = set(workflows)
        self.agents = set(agents)
        self.check_calls = check_calls  # names of other workflows/agents must exist

    def check(self, spec: WorkflowSpec) -> list[Issue]:
        issues: list[Issue] = []
        check_schema(spec.input, ("input",), issues)
        check_schema(spec.output_schema, ("output_schema",), issues)
        self._steps(spec, spec.steps, ("steps",), {}, issues, inside_map=False)
        if not issues:
            try:
                order(spec.steps, self.compiler)
            except WorkflowInvalid as exc:
                issues += exc.issues
        if spec.output is not None:
            known = {s.id: s for s in spec.steps}
            issues += self._refs(spec, spec.output, ("output",), known, False)
        return issues

    def _steps(
        self,
        spec: WorkflowSpec,
        steps: list[StepSpec],
        loc: Loc,
        outer: dict[str, StepSpec],
        issues: list[Issue],
        inside_map: bool,
    ) -> None:
        known = dict(outer)
        seen: dict[str, int] = {}
        for index, step in enumerate(steps):
            if step.id in seen or step.id in outer:
                issues.append(Issue((*loc, index, "id"), f"step id {step.id!r} is used twice"))
            seen[step.id] = index
            known[step.id] = step
        for index, step in enumerate(steps):
            here: Loc = (*loc, index)
            body = step.body
            kind = step.kind
            if step.when is not None:
                issues += self._refs(spec, step.when, (*here, "when"), known, inside_map, True)
            values: list[tuple[str, Any]] = []
            if kind == "llm":
                values = [("variables", body.variables)]
                if body.messages is not None:
                    values.append(("messages", [m.content for m in body.messages]))
                check_schema(body.schema_, (*here, kind, "schema"), issues)
            elif kind == "retrieve":
                values = [("query", body.query)]
            elif kind == "http":
                values = [("url", body.url), ("body", body.body)]
                values += [("headers", v) for v in body.headers.values() if isinstance(v, str)]
                check_schema(body.input_schema, (*here, kind, "input_schema"), issues)
                check_schema(body.output_schema, (*here, kind, "output_schema"), issues)
            elif kind == "transform":
                values = [("value", body.value)]
                check_schema(body.schema_, (*here, kind, "schema"), issues)
            elif kind == "guard":
                values = [("text", body.text)]
            elif kind in ("workflow", "agent"):
                values = [("input", body.input)]
                names = self.workflows if kind == "workflow" else self.agents
                if self.check_calls and body.name not in names:
                    issues.append(
                        Issue(
                            (*here, kind, "name"),
                            f"unknown {kind} {body.name!r}; apply it first or in the same files",
                        )
                    )
                if kind == "workflow" and body.name == spec.name:
                    issues.append(Issue((*here, kind, "name"), "a workflow cannot call itself"))
            elif kind == "branch":
                for number, case in enumerate(body.cases):
                    where = (*here, kind, "cases", number)
                    issues += self._refs(spec, case.if_, (*where, "if"), known, inside_map, True)
                    for target in case.then:
                        if target not in seen:
                            issues.append(Issue((*where, "then"), _unknown(target, seen)))
                for target in body.else_:
                    if target not in seen:
                        issues.append(Issue((*here, kind, "else"), _unknown(target, seen)))
            elif kind == "map":
                issues += self._refs(
                    spec, body.over, (*here, kind, "over"), known, inside_map, True
                )
                self._steps(spec, body.steps, (*here, kind, "steps"), known, issues, True)
                if body.output is not None:
                    inner = {**known, **{s.id: s for s in body.steps}}
                    issues += self._refs(spec, body.output, (*here, kind, "output"), inner, True)
            for name, value in values:
                issues += self._refs(spec, value, (*here, kind, name), known, inside_map)

    def _refs(
        self,
        spec: WorkflowSpec,
        value: Any,
        loc: Loc,
        known: Mapping[str, StepSpec],
        inside_map: bool,
        condition: bool = False,
    ) -> list[Issue]:
        try:
            refs = (
                self.compiler.condition_references(value)
                if condition
                else self.compiler.references(value)
            )
            if condition:
                self.compiler.condition(value)
            else:
                self.compiler.compile(value)
        except ExpressionError as exc:
            return [Issue(loc, exc.message)]
        issues = []
        for ref in refs:
            problem = self._ref_problem(spec, ref, known, inside_map)
            if problem is not None:
                issues.append(Issue(loc, problem))
        return issues

    @staticmethod
    def _ref_problem(
        spec: WorkflowSpec, ref: Reference, known: Mapping[str, StepSpec], inside_map: bool
    ) -> str | None:
        if ref.root in ("item", "index"):
            return None if inside_map else f"'{ref.root}' exists only inside a map's steps"
        if ref.root == "env":
            return "'env' is not readable in templates; use {$env: NAME} in http headers"
        if ref.root == "input":
            problem = _field_problem(spec.input, ref.path)
            return f"input: {problem}" if problem else None
        if not ref.path:
            return None
        step_id = ref.path[0]
        if step_id not in known:
            return _unknown(step_id, known)
        rest = ref.path[1:]
        if rest and rest[0] != "output":
            return (
                f"steps.{step_id}.{rest[0]}: a step has only 'output'; write "
                f"steps.{step_id}.output…"
            )
        problem = _field_problem(output_schema(known[step_id]), rest[1:])
        return f"steps.{step_id}.output: {problem}" if problem else None


def _unknown(step_id: str, known: Mapping[str, Any]) -> str:
    names = ", ".join(sorted(known)) or "none"
    return f"unknown step {step_id!r} (steps: {names})"


def step_reads(step: StepSpec, compiler: Compiler) -> set[str]:
    """The ids of the steps whose outputs `step` reads (its map's inner steps included)."""
    refs: list[Reference] = []
    body = step.body
    if step.when is not None:
        refs += compiler.condition_references(step.when)
    kind = step.kind
    if kind == "llm":
        refs += compiler.references(body.variables)
        if body.messages is not None:
            refs += compiler.references([m.content for m in body.messages])
    elif kind == "retrieve":
        refs += compiler.references(body.query)
    elif kind == "http":
        refs += compiler.references([body.url, body.body, list(body.headers.values())])
    elif kind == "transform":
        refs += compiler.references(body.value)
    elif kind == "guard":
        refs += compiler.references(body.text)
    elif kind in ("workflow", "agent"):
        refs += compiler.references(body.input)
    elif kind == "branch":
        for case in body.cases:
            refs += compiler.condition_references(case.if_)
    elif kind == "map":
        refs += compiler.condition_references(body.over)
        inner = {s.id for s in body.steps}
        reads: set[str] = set()
        for child in body.steps:
            reads |= step_reads(child, compiler)
        return {r.path[0] for r in refs if r.root == "steps" and r.path} | (reads - inner)
    return {r.path[0] for r in refs if r.root == "steps" and r.path}


def order(steps: list[StepSpec], compiler: Compiler) -> list[StepSpec]:
    """Steps in run order; a cycle is WorkflowInvalid naming the steps on it."""
    by_id = {s.id: (i, s) for i, s in enumerate(steps)}
    needs: dict[str, set[str]] = {}
    for step in steps:
        needs[step.id] = {r for r in step_reads(step, compiler) if r in by_id}
        if step.kind == "branch":  # a branch decides before the steps it picks
            for case in step.body.cases:
                for target in case.then:
                    needs.setdefault(target, set())
            for target in step.body.else_:
                needs.setdefault(target, set())
    for step in steps:
        if step.kind == "branch":
            targets = {t for c in step.body.cases for t in c.then} | set(step.body.else_)
            for target in targets:
                if target in needs:
                    needs[target].add(step.id)
    done: list[StepSpec] = []
    placed: set[str] = set()
    while len(done) < len(steps):
        ready = [s for s in steps if s.id not in placed and needs[s.id] <= placed]
        if not ready:
            left = [s.id for s in steps if s.id not in placed]
            first = min(by_id[name][0] for name in left)
            return _cycle(left, needs, first)
        step = ready[0]
        placed.add(step.id)
        done.append(step)
    return done


def _cycle(left: list[str], needs: dict[str, set[str]], first: int) -> list[StepSpec]:
    # Walk the "needs" edges from any unplaced step until a step repeats: that is a cycle.
    path: list[str] = []
    current = left[0]
    while current not in path:
        path.append(current)
        current = sorted(needs[current] & set(left))[0]
    cycle = [*path[path.index(current) :], current]
    raise WorkflowInvalid(
        [Issue(("steps", first), f"steps form a cycle: {' -> '.join(cycle)}; break it")]
    )
