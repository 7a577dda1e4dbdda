"""The providers:, models:, routes: and deployments: sections of `keel apply`.

Applied in that order, each only where the file differs from the server, so applying the
same file twice changes nothing. Provider keys must be `{$env: NAME}` references.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ValidationError

from keel.gitops.api import KeelAPI
from keel.gitops.base import ApplyOptions, Outcome
from keel.gitops.source import Located, Problem
from keel.providers.plugins import ProviderPlugins
from keel.registry.specs import (
    DeploymentSpec,
    ModelVersionSpec,
    ProviderSpec,
    RouteSpec,
    check_provider_kind,
    parse_version_ref,
)

PLANNED_VERSIONS = "registry.planned_versions"  # key in ApplyOptions.context


def _resolve_env(entry: Located, data: dict[str, Any], problems: list[Problem]) -> None:
    key = data.get("api_key")
    if key is None:
        return
    if isinstance(key, dict) and set(key) == {"$env"}:
        name = str(key["$env"])
        if name not in os.environ:
            problems.append(entry.problem(f"environment variable {name} is not set", ("api_key",)))
        data["api_key"] = os.environ.get(name)
        return
    problems.append(
        entry.problem("write keys as {$env: NAME}; keys are never inlined in files", ("api_key",))
    )


@dataclass
class _Section:
    """Shared load logic: validate each entry into its spec, refuse duplicates."""

    options: ApplyOptions
    entries: list[tuple[BaseModel, Located]] = field(default_factory=list)
    seen: dict[str, Located] = field(default_factory=dict)
    planned: list[tuple[BaseModel, Located, str]] = field(default_factory=list)

    spec_type: type[BaseModel] = BaseModel
    key_field: str | None = "name"  # None: entries may repeat (model versions)

    def load(self, entry: Located) -> list[Problem]:
        if not isinstance(entry.value, dict):
            return [entry.problem("must be a mapping of fields")]
        data = dict(entry.value)
        problems: list[Problem] = []
        self.prepare(entry, data, problems)
        try:
            spec = self.spec_type.model_validate(data)
        except ValidationError as exc:
            return problems + entry.validation_problems(exc)
        if self.key_field is not None:
            key = str(getattr(spec, self.key_field))
            if key in self.seen:
                other = self.seen[key]
                where = f"{other.document.path}:{other.document.line(other.loc)}"
                problems.append(
                    entry.problem(f"{key!r} is also defined at {where}", (self.key_field,))
                )
            self.seen[key] = entry
        self.entries.append((spec, entry))
        return problems + self.check(entry, spec)

    def prepare(self, entry: Located, data: dict[str, Any], problems: list[Problem]) -> None:
        """Adjust raw data before validation (e.g. resolve env references)."""

    def check(self, entry: Located, spec: BaseModel) -> list[Problem]:
        """Rules beyond the schema, on an entry that passed it."""
        return []


class ProvidersHandler(_Section):
    section = "providers"

    def __init__(self, options: ApplyOptions):
        super().__init__(options, spec_type=ProviderSpec)
        self._plugins: ProviderPlugins | None = None

    def prepare(self, entry: Located, data: dict[str, Any], problems: list[Problem]) -> None:
        _resolve_env(entry, data, problems)

    def check(self, entry: Located, spec: BaseModel) -> list[Problem]:
        """Kinds are checked against the plugins installed here, before anything changes;
        the server checks again against its own."""
        assert isinstance(spec, ProviderSpec)
        if self._plugins is None:  # read once, and only for files that declare providers
            self._plugins = ProviderPlugins.load()
        problem = check_provider_kind(spec, self._plugins)
        if problem is None:
            return []
        field_name, message = problem
        return [entry.problem(message, (field_name,))]

    async def plan(self, api: KeelAPI) -> list[Problem]:
        current = {p["name"]: p for p in await api.call("GET", "/api/providers")}
        for spec, entry in self.entries:
            assert isinstance(spec, ProviderSpec)
            now = current.get(spec.name)
            if now is None:
                self.planned.append((spec, entry, "create"))
            elif (now["kind"], now["base_url"], now["config"]) != (
                spec.kind, spec.base_url, spec.config,
            ) or spec.api_key is not None:  # fmt: skip
                # A key is never read back, so the server decides whether it changed.
                self.planned.append((spec, entry, "update"))
        return []

    async def apply(self, api: KeelAPI, *, dry_run: bool) -> list[Outcome]:
        outcomes = []
        for spec, _, action in self.planned:
            assert isinstance(spec, ProviderSpec)
            changed = True
            if not dry_run:
                body = spec.model_dump(exclude={"name"})
                result = await api.call("PUT", f"/api/providers/{quote(spec.name)}", json=body)
                changed = bool(result["changed"])
            if changed:
                outcomes.append(Outcome(self.section, spec.name, action, True))
        return outcomes


class ModelsHandler(_Section):
    section = "models"

    def __init__(self, options: ApplyOptions):
        super().__init__(options, spec_type=ModelVersionSpec, key_field=None)

    async def plan(self, api: KeelAPI) -> list[Problem]:
        """The n-th entry of a name is version n: equal → nothing, new → created, else refused.

        Versions are immutable, so a file lists them in order and grows at the end, and
        `keel export` writes one entry per version, which applies back as no change.
        """
        existing = {m["ref"]: m for m in await api.call("GET", "/api/models")}
        counts: dict[str, int] = {}
        problems: list[Problem] = []
        for spec, entry in self.entries:
            assert isinstance(spec, ModelVersionSpec)
            counts[spec.name] = version = counts.get(spec.name, 0) + 1
            ref = f"{spec.name}@{version}"
            current = existing.get(ref)
            if current is None:
                self.planned.append((spec, entry, f"new version {ref}"))
            elif any(current[k] != v for k, v in spec.model_dump().items()):
                problems.append(entry.problem(
                    f"{ref} already exists with other content and versions are immutable; "
                    "leave this entry as it was and add a new entry after it"
                ))  # fmt: skip
        known = set(existing) | {f"{n}@{v}" for n, c in counts.items() for v in range(1, c + 1)}
        self.options.context[PLANNED_VERSIONS] = known
        return problems

    async def apply(self, api: KeelAPI, *, dry_run: bool) -> list[Outcome]:
        outcomes = []
        for spec, _, detail in self.planned:
            assert isinstance(spec, ModelVersionSpec)
            if not dry_run:
                result = await api.call("POST", "/api/models", json=spec.model_dump())
                detail = f"new version {result['data']['ref']}"
            outcomes.append(Outcome(self.section, spec.name, detail, True))
        return outcomes


class RoutesHandler(_Section):
    section = "routes"

    def __init__(self, options: ApplyOptions):
        super().__init__(options, spec_type=RouteSpec)

    async def plan(self, api: KeelAPI) -> list[Problem]:
        known = self.options.context.get(PLANNED_VERSIONS)
        if known is None:
            known = {m["ref"] for m in await api.call("GET", "/api/models")}
        current = {r["name"]: r for r in await api.call("GET", "/api/routes")}
        problems = []
        for spec, entry in self.entries:
            assert isinstance(spec, RouteSpec)
            missing = [ref for ref in spec.refs() if ref not in known]
            for ref in missing:
                field_name = "targets" if ref in spec.targets else "fallbacks"
                problems.append(
                    entry.problem(f"unknown model version {ref!r} (known: "
                                  f"{', '.join(sorted(known)) or 'none'})", (field_name,))
                )  # fmt: skip
            now = current.get(spec.name)
            wanted = spec.model_dump()
            if now is None or any(now.get(k) != v for k, v in wanted.items()):
                self.planned.append((spec, entry, "create" if now is None else "update"))
        return problems

    async def apply(self, api: KeelAPI, *, dry_run: bool) -> list[Outcome]:
        outcomes = []
        for spec, _, action in self.planned:
            assert isinstance(spec, RouteSpec)
            detail = f"{action}: " + ", ".join(f"{r} {w}" for r, w in spec.targets.items())
            if not dry_run:
                body = spec.model_dump(exclude={"name"})
                await api.call("PUT", f"/api/routes/{quote(spec.name)}", json=body)
            outcomes.append(Outcome(self.section, spec.name, detail, True))
        return outcomes


class DeploymentsHandler(_Section):
    section = "deployments"

    def __init__(self, options: ApplyOptions):
        super().__init__(options, spec_type=DeploymentSpec, key_field="model")

    async def plan(self, api: KeelAPI) -> list[Problem]:
        known = self.options.context.get(PLANNED_VERSIONS)
        if known is None:
            known = {m["ref"] for m in await api.call("GET", "/api/models")}
        current = {d["model"]: d["replicas"] for d in await api.call("GET", "/api/deployments")}
        problems = []
        for spec, entry in self.entries:
            assert isinstance(spec, DeploymentSpec)
            parse_version_ref(spec.model)
            if spec.model not in known:
                problems.append(entry.problem(f"unknown model version {spec.model!r}", ("model",)))
            if current.get(spec.model) != spec.replicas:
                self.planned.append((spec, entry, f"{spec.replicas} replica(s)"))
        return problems

    async def apply(self, api: KeelAPI, *, dry_run: bool) -> list[Outcome]:
        outcomes = []
        for spec, _, detail in self.planned:
            assert isinstance(spec, DeploymentSpec)
            if not dry_run:
                await api.call("PUT", "/api/deployments", json=spec.model_dump())
            outcomes.append(Outcome(self.section, spec.model, detail, True))
        return outcomes
