"""The providers:, models:, routes: and deployments: sections of `keel apply`.

Applied in that order, each only where the file differs from the server, so applying the
same file twice changes nothing. Provider keys must be `{$env: NAME}` references, which
the server resolves from its own environment. With --prune, what the server holds and the
files no longer declare is removed, in the reverse order (routes before the model versions
they name, model versions before their providers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ValidationError

from keel.gitops.api import ApiError, KeelAPI
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

# Keys in ApplyOptions.context that one section leaves for another.
PLANNED_VERSIONS = "registry.planned_versions"
SERVER_MODELS = "registry.server_models"  # refs the server holds before this apply
SERVER_ROUTES = "registry.server_routes"  # name → route, before this apply
FILE_ROUTES = "registry.file_routes"  # name → (spec, entry) of the files' routes
FILE_DEPLOYMENTS = "registry.file_deployments"  # model refs the files deploy
PRUNED_DEPLOYMENTS = "registry.pruned_deployments"  # model refs --prune undeploys
PRUNED_MODELS = "registry.pruned_models"  # refs --prune deletes


def _env_reference(entry: Located, data: dict[str, Any], problems: list[Problem]) -> None:
    """`api_key: {$env: NAME}` → api_key_env NAME: the server reads NAME where it runs."""
    key = data.get("api_key")
    if key is None:
        return
    if isinstance(key, dict) and set(key) == {"$env"}:
        data.pop("api_key")
        data["api_key_env"] = str(key["$env"])
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

    section = ""  # set by each subclass: the top-level YAML key
    spec_type: type[BaseModel] = BaseModel
    key_field: str | None = "name"  # None: entries may repeat (model versions)
    declared: Located | None = None  # where the files name this section (--prune acts in it)
    removals: list[tuple[str, str]] = field(default_factory=list)  # (name, API path) to remove

    def declare(self, where: Located) -> None:
        if self.declared is None:
            self.declared = where

    def section_problem(self, message: str) -> Problem:
        assert self.declared is not None
        return self.declared.problem(message)

    async def plan_removals(self, api: KeelAPI) -> list[Problem]:
        return []

    async def remove(self, api: KeelAPI, *, dry_run: bool) -> list[Outcome]:
        outcomes = []
        for name, path in self.removals:
            if not dry_run:
                await api.call("DELETE", path)
            verb = "would remove" if dry_run else "removed"
            outcomes.append(
                Outcome(self.section, name, f"{verb} (not in the files; --prune)", True)
            )
        return outcomes

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
        self._current: dict[str, dict[str, Any]] = {}

    def prepare(self, entry: Located, data: dict[str, Any], problems: list[Problem]) -> None:
        _env_reference(entry, data, problems)

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
        self._current = current
        problems = []
        for spec, entry in self.entries:
            assert isinstance(spec, ProviderSpec)
            now = current.get(spec.name)
            mine = (spec.kind, spec.base_url, spec.config, spec.api_key_env)
            if now is not None and mine == (
                now["kind"], now["base_url"], now["config"], now.get("api_key_env"),
            ):  # fmt: skip
                continue
            # The server checks what only it knows (its plugins, its environment) now,
            # so that a missing variable stops the apply before anything changed.
            body = spec.model_dump(exclude={"name"})
            try:
                await api.call(
                    "PUT", f"/api/providers/{quote(spec.name)}", json=body,
                    params={"dry_run": "true"},
                )  # fmt: skip
            except ApiError as exc:
                if exc.status is None or exc.status >= 500:
                    raise
                field_name = "api_key" if "environment variable" in str(exc) else "kind"
                problems.append(entry.problem(exc.message, (field_name,)))
                continue
            if now is None:
                self.planned.append((spec, entry, "create"))
            else:
                before = {**now, "api_key_env": now.get("api_key_env")}
                after = spec.model_dump(exclude={"name", "api_key"})
                self.planned.append((spec, entry, "update: " + _diff(before, after)))
        return problems

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

    async def plan_removals(self, api: KeelAPI) -> list[Problem]:
        if not self.declared:
            return []
        kept = {str(getattr(spec, "name", "")) for spec, _ in self.entries}
        pruned_models = set(self.options.context.get(PRUNED_MODELS, ()))
        models = await api.call("GET", "/api/models")
        problems = []
        for name in sorted(set(self._current) - kept):
            users = [m["ref"] for m in models if m["provider"] == name]
            users = [ref for ref in users if ref not in pruned_models]
            if users:
                problems.append(self.section_problem(
                    f"cannot prune provider {name!r}: model version(s) {', '.join(users)} "
                    "still use it; remove them from the files too, or keep the provider"
                ))  # fmt: skip
                continue
            self.removals.append((name, f"/api/providers/{quote(name)}"))
        return problems


class ModelsHandler(_Section):
    section = "models"

    def __init__(self, options: ApplyOptions):
        super().__init__(options, spec_type=ModelVersionSpec, key_field=None)
        self._counts: dict[str, int] = {}

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
        self.options.context[SERVER_MODELS] = existing
        self._counts = counts
        return problems

    async def plan_removals(self, api: KeelAPI) -> list[Problem]:
        """Versions of names the files leave out, and numbers past a name's entry count.

        A version that carries traffic now (weight above 0 in a route the files keep) is
        refused: set its weight to 0 and apply first, then prune it.
        """
        if not self.declared:
            return []
        existing: dict[str, dict[str, Any]] = self.options.context.get(SERVER_MODELS, {})
        server_routes: dict[str, dict[str, Any]] = self.options.context.get(SERVER_ROUTES, {})
        file_routes: dict[str, RouteSpec] = self.options.context.get(FILE_ROUTES, {})
        file_deployed: set[str] = self.options.context.get(FILE_DEPLOYMENTS, set())
        undeployed: set[str] = self.options.context.get(PRUNED_DEPLOYMENTS, set())
        deployed = {d["model"] for d in await api.call("GET", "/api/deployments")}
        problems = []
        pruned: set[str] = set()
        for ref, model in sorted(existing.items()):
            if model["version"] <= self._counts.get(model["name"], 0):
                continue
            why = []
            for name, route in sorted(server_routes.items()):
                weight = route["targets"].get(ref, 0)
                if weight > 0 and name in file_routes:
                    total = sum(route["targets"].values()) or 1
                    why.append(
                        f"route {name!r} sends it {100 * weight / total:.0f}% of its traffic "
                        f"now (weight {weight}); set its weight to 0 and apply, then prune it"
                    )
            for name, spec in sorted(file_routes.items()):
                if ref in spec.refs():
                    why.append(f"route {name!r} in the files still names it")
            if ref in file_deployed or (ref in deployed and ref not in undeployed):
                why.append("it is deployed; remove its deployment too ('keel undeploy')")
            if why:
                problems.append(
                    self.section_problem(f"cannot prune model version {ref}: " + "; ".join(why))
                )
                continue
            pruned.add(ref)
            self.removals.append((ref, f"/api/models/{quote(ref)}"))
        self.options.context[PRUNED_MODELS] = pruned
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
        self.options.context[SERVER_ROUTES] = current
        self.options.context[FILE_ROUTES] = {
            spec.name: spec for spec, _ in self.entries if isinstance(spec, RouteSpec)
        }
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
            if now is None:
                split = ", ".join(f"{r} {w}" for r, w in spec.targets.items())
                self.planned.append((spec, entry, f"create: {split}"))
            elif any(now.get(k) != v for k, v in wanted.items()):
                self.planned.append((spec, entry, "update: " + _diff(now, wanted)))
        return problems

    async def plan_removals(self, api: KeelAPI) -> list[Problem]:
        if not self.declared:
            return []
        current: dict[str, Any] = self.options.context.get(SERVER_ROUTES, {})
        kept = {str(getattr(spec, "name", "")) for spec, _ in self.entries}
        for name in sorted(set(current) - kept):
            self.removals.append((name, f"/api/routes/{quote(name)}"))
        return []

    async def apply(self, api: KeelAPI, *, dry_run: bool) -> list[Outcome]:
        outcomes = []
        for spec, _, detail in self.planned:
            assert isinstance(spec, RouteSpec)
            if not dry_run:
                body = spec.model_dump(exclude={"name"})
                await api.call("PUT", f"/api/routes/{quote(spec.name)}", json=body)
            outcomes.append(Outcome(self.section, spec.name, detail, True))
        return outcomes


class DeploymentsHandler(_Section):
    section = "deployments"

    def __init__(self, options: ApplyOptions):
        super().__init__(options, spec_type=DeploymentSpec, key_field="model")
        self._current: dict[str, int] = {}

    async def plan_removals(self, api: KeelAPI) -> list[Problem]:
        if not self.declared:
            return []
        kept = self.options.context.get(FILE_DEPLOYMENTS, set())
        gone = sorted(set(self._current) - kept)
        for ref in gone:
            self.removals.append((ref, f"/api/deployments/{quote(ref)}"))
        self.options.context[PRUNED_DEPLOYMENTS] = set(gone)
        return []

    async def plan(self, api: KeelAPI) -> list[Problem]:
        known = self.options.context.get(PLANNED_VERSIONS)
        if known is None:
            known = {m["ref"] for m in await api.call("GET", "/api/models")}
        listed = await api.call("GET", "/api/deployments")
        current = {d["model"]: d["replicas"] for d in listed}
        placed = {d["model"]: d.get("on", "local") for d in listed}
        self._current = current
        self.options.context[FILE_DEPLOYMENTS] = {
            spec.model for spec, _ in self.entries if isinstance(spec, DeploymentSpec)
        }
        problems = []
        for spec, entry in self.entries:
            assert isinstance(spec, DeploymentSpec)
            parse_version_ref(spec.model)
            if spec.model not in known:
                problems.append(entry.problem(f"unknown model version {spec.model!r}", ("model",)))
            if (current.get(spec.model), placed.get(spec.model)) != (spec.replicas, spec.on):
                where = " on Ray" if spec.on == "ray" else ""
                self.planned.append((spec, entry, f"{spec.replicas} replica(s){where}"))
        return problems

    async def apply(self, api: KeelAPI, *, dry_run: bool) -> list[Outcome]:
        outcomes = []
        for spec, _, detail in self.planned:
            assert isinstance(spec, DeploymentSpec)
            if not dry_run:
                await api.call("PUT", "/api/deployments", json=spec.model_dump())
            outcomes.append(Outcome(self.section, spec.model, detail, True))
        return outcomes


def _diff(before: dict[str, Any], after: dict[str, Any]) -> str:
    """`field old → new` for each field `after` sets to another value than `before` has."""
    changes = []
    for key, value in after.items():
        old = before.get(key)
        if old == value:
            continue
        if isinstance(old, dict) and isinstance(value, dict):
            for sub in sorted(set(old) | set(value), key=str):
                if old.get(sub) != value.get(sub):
                    changes.append(f"{key}.{sub} {_shown(old.get(sub))} → {_shown(value.get(sub))}")
        else:
            changes.append(f"{key} {_shown(old)} → {_shown(value)}")
    return ", ".join(changes) or "no visible change"


def _shown(value: Any) -> str:
    return "unset" if value is None else str(value)
