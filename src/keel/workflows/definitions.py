"""Workflow and agent definitions: versions in the store, compiled ones in memory.

A new version is checked whole before it is stored (references, schemas, cycles, the
workflows and agents it names), so nothing half-valid is ever applied. Compiled versions
are cached per (project, kind, name) and replaced when a newer version is stored.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from pydantic import ValidationError

from keel.errors import InvalidRequest, NotFound
from keel.events import Change, ChangeBus
from keel.workflows.compiled import CompiledWorkflow, compile_workflow
from keel.workflows.expr import Compiler
from keel.workflows.spec import AgentSpec, WorkflowSpec
from keel.workflows.store import WorkflowStore
from keel.workflows.validate import Checker, Issue, WorkflowInvalid

Kind = Literal["workflow", "agent"]
TOPIC = "workflows"


def invalid(issues: list[Issue], what: str) -> InvalidRequest:
    text = "; ".join(str(i) for i in issues[:10])
    error = InvalidRequest(f"{what} is invalid: {text}", param="spec", code="invalid_workflow")
    error.issues = [{"loc": list(i.loc), "message": i.message} for i in issues]  # type: ignore[attr-defined]
    return error


def parse(kind: Kind, data: Any) -> WorkflowSpec | AgentSpec:
    try:
        if kind == "agent":
            return AgentSpec.model_validate(data)
        return WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        issues = [
            Issue(tuple(e["loc"]), str(e["msg"]).removeprefix("Value error, "))
            for e in exc.errors()
        ]
        raise invalid(issues, f"the {kind}") from None


class Definitions:
    """`events` carries each new version to every replica's cache (topic `workflows`)."""

    def __init__(self, store: WorkflowStore, compiler: Compiler, events: ChangeBus | None = None):
        self.store = store
        self.compiler = compiler
        self.events = events
        self._workflows: dict[tuple[str, str], CompiledWorkflow] = {}
        self._agents: dict[tuple[str, str], tuple[int, AgentSpec]] = {}
        if events is not None:
            events.subscribe(TOPIC, self._on_change)

    def _on_change(self, change: Change) -> None:
        self.forget(change.project_id, change.key)

    def changed(self, project_id: str, name: str) -> None:
        """A definition changed here: drop it from this cache and tell the other replicas."""
        self.forget(project_id, name)
        if self.events is not None:
            self.events.publish(Change(TOPIC, name, project_id))

    def check(
        self,
        project_id: str,
        kind: Kind,
        spec: WorkflowSpec | AgentSpec,
        also: dict[str, set[str]] | None = None,
    ) -> list[Issue]:
        """Everything wrong with `spec`; `also` names definitions that will exist."""
        names = {
            k: {d["name"] for d in self.store.definitions(project_id, k) if not d["archived"]}
            for k in ("workflow", "agent")
        }
        for k, more in (also or {}).items():
            names[k] |= more
        if isinstance(spec, AgentSpec):
            issues = []
            for index, tool in enumerate(spec.tools):
                workflow = getattr(tool, "workflow", None)
                if workflow is not None and workflow not in names["workflow"]:
                    issues.append(
                        Issue(("tools", index, "workflow"), f"unknown workflow {workflow!r}")
                    )
            return issues
        checker = Checker(self.compiler, names["workflow"] | {spec.name}, names["agent"], True)
        return checker.check(spec)

    def put(
        self,
        project_id: str,
        kind: Kind,
        data: Any,
        message: str = "",
        also: dict[str, set[str]] | None = None,
    ) -> dict[str, Any]:
        """Store a new version unless the newest holds the same spec (blocking: a thread).
        `also`: names stored in the same apply, which may come after this one."""
        spec = parse(kind, data)
        issues = self.check(project_id, kind, spec, also)
        if issues:
            raise invalid(issues, f"{kind} {spec.name!r}")
        stored = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        version, created = self.store.put_version(
            project_id, kind, spec.name, stored, spec.content_hash(), message
        )
        if created:
            self.changed(project_id, spec.name)
        return {"name": spec.name, "kind": kind, "version": version, "created": created}

    def latest(self, project_id: str, kind: Kind, name: str) -> tuple[int, dict[str, Any]]:
        versions = self.store.versions(project_id, kind, name)
        listed = {d["name"]: d for d in self.store.definitions(project_id, kind)}
        if not versions or listed.get(name, {}).get("archived"):
            known = ", ".join(n for n, d in sorted(listed.items()) if not d["archived"]) or "none"
            raise NotFound(
                f"unknown {kind} {name!r} (known: {known}); apply it with 'keel apply'",
                param="name",
                code=f"{kind}_not_found",
            )
        return versions[0]["version"], versions[0]["spec"]

    async def workflow(self, project_id: str, name: str) -> CompiledWorkflow:
        found = self._workflows.get((project_id, name))
        if found is not None:
            return found
        version, data = await asyncio.to_thread(self.latest, project_id, "workflow", name)
        spec = WorkflowSpec.model_validate(data)
        try:
            compiled = compile_workflow(spec, version, self.compiler)
        except WorkflowInvalid as exc:
            raise invalid(exc.issues, f"workflow {name!r}") from None
        self._workflows[(project_id, name)] = compiled
        return compiled

    async def agent(self, project_id: str, name: str) -> AgentSpec:
        found = self._agents.get((project_id, name))
        if found is not None:
            return found[1]
        version, data = await asyncio.to_thread(self.latest, project_id, "agent", name)
        spec = AgentSpec.model_validate(data)
        self._agents[(project_id, name)] = (version, spec)
        return spec

    def forget(self, project_id: str, name: str) -> None:
        self._workflows.pop((project_id, name), None)
        self._agents.pop((project_id, name), None)
