"""The workflows: and agents: sections of `keel apply`: a new version only where the file's
spec differs from the newest on the server, each checked whole first (steps, references,
schemas, cycles offline; the workflows and agents it names against the server and the
files), so a bad entry stops the apply before anything changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

from pydantic import ValidationError

from keel.gitops.api import ApiError, KeelAPI
from keel.gitops.base import ApplyOptions, Outcome
from keel.gitops.source import Located, Problem
from keel.workflows.expr import Compiler
from keel.workflows.spec import AgentSpec, WorkflowSpec
from keel.workflows.validate import Checker

Kind = Literal["workflow", "agent"]
# Names the files define, shared by the two sections (a workflow may run an agent, an agent
# may call a workflow as a tool).
FILE_DEFINITIONS = "workflows.file_definitions"


@dataclass
class _Entry:
    kind: Kind
    spec: WorkflowSpec | AgentSpec
    where: Located
    create: bool = False
    version: int = 0


@dataclass
class _DefinitionsHandler:
    options: ApplyOptions
    kind: Kind = "workflow"
    section: str = "workflows"
    entries: list[_Entry] = field(default_factory=list)
    seen: dict[str, Located] = field(default_factory=dict)
    compiler: Compiler = field(default_factory=Compiler)

    def _names(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = self.options.context.setdefault(
            FILE_DEFINITIONS, {"workflow": set(), "agent": set()}
        )
        return found

    def load(self, entry: Located) -> list[Problem]:
        if not isinstance(entry.value, dict):
            return [entry.problem(f"a {self.kind} must be a mapping (name, …)")]
        data: dict[str, Any] = dict(entry.value)
        if entry.loc == () and "name" not in data:
            data["name"] = entry.document.path.stem
        try:
            spec: WorkflowSpec | AgentSpec = (
                AgentSpec if self.kind == "agent" else WorkflowSpec
            ).model_validate(data)
        except ValidationError as exc:
            return entry.validation_problems(exc)
        if spec.name in self.seen:
            other = self.seen[spec.name]
            first = f"{other.document.path}:{other.document.line(other.loc)}"
            return [
                entry.problem(f"{self.kind} {spec.name!r} is also defined at {first}", ("name",))
            ]
        problems: list[Problem] = []
        if isinstance(spec, WorkflowSpec):
            for issue in Checker(self.compiler).check(spec):
                problems.append(entry.problem(issue.message, issue.loc))
        if problems:
            return problems
        self.seen[spec.name] = entry
        self._names()[self.kind].add(spec.name)
        self.entries.append(_Entry(self.kind, spec, entry))
        return []

    async def plan(self, api: KeelAPI) -> list[Problem]:
        problems: list[Problem] = []
        also = {kind: sorted(names) for kind, names in self._names().items()}
        for item in self.entries:
            data = item.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
            try:
                await api.call(
                    "POST",
                    "/api/workflows/check",
                    json={"kind": item.kind, "spec": data, "also": also},
                )
            except ApiError as exc:
                if exc.status != 400:
                    raise
                problems.append(item.where.problem(exc.message))
                continue
            path = f"/api/workflows/{quote(item.spec.name, safe='')}"
            current = await api.call("GET", path, params={"kind": item.kind}, missing_ok=True)
            if current is None:
                item.create, item.version = True, 1
                continue
            newest = current["versions"][0]
            item.create = newest["content_hash"] != item.spec.content_hash()
            item.version = newest["version"] + (1 if item.create else 0)
        return problems

    async def apply(self, api: KeelAPI, *, dry_run: bool) -> list[Outcome]:
        outcomes: list[Outcome] = []
        also = {kind: sorted(names) for kind, names in self._names().items()}
        for item in _ordered(self.entries, self.compiler):
            name = item.spec.name
            if not item.create:
                outcomes.append(
                    Outcome(self.section, name, f"no changes (version {item.version})", False)
                )
                continue
            if not dry_run:
                message = self.options.message or f"keel apply {item.where.document.path.name}"
                data = item.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
                answer = await api.call(
                    "POST",
                    "/api/workflows",
                    json={"kind": item.kind, "spec": data, "message": message, "also": also},
                )
                item.version = answer["version"]
            verb = "would create" if dry_run else "created"
            outcomes.append(Outcome(self.section, name, f"{verb} version {item.version}", True))
        return outcomes


def _ordered(entries: list[_Entry], compiler: Compiler) -> list[_Entry]:
    """Workflows that others call go first, so each is known when its caller is stored."""
    by_name = {e.spec.name: e for e in entries}
    placed: list[_Entry] = []
    done: set[str] = set()

    def calls(entry: _Entry) -> set[str]:
        if not isinstance(entry.spec, WorkflowSpec):
            return set()
        names: set[str] = set()
        stack = list(entry.spec.steps)
        while stack:
            step = stack.pop()
            if step.workflow is not None:
                names.add(step.workflow.name)
            if step.map is not None:
                stack += step.map.steps
        return names & set(by_name)

    def visit(entry: _Entry, path: set[str]) -> None:
        name = entry.spec.name
        if name in done or name in path:
            return
        for callee in sorted(calls(entry)):
            visit(by_name[callee], path | {name})
        done.add(name)
        placed.append(entry)

    for entry in entries:
        visit(entry, set())
    return placed


class WorkflowsHandler(_DefinitionsHandler):
    def __init__(self, options: ApplyOptions):
        super().__init__(options, "workflow", "workflows")


class AgentsHandler(_DefinitionsHandler):
    def __init__(self, options: ApplyOptions):
        super().__init__(options, "agent", "agents")
