"""The `prompts:` section of `keel apply`: a new version only when no version holds the
content yet, and labels pointed at a version number or at `latest` (the version that holds
the file's content after this apply: a new one, or an earlier one with the same text).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import yaml
from pydantic import Field, ValidationError, field_validator

from keel.gitops.api import KeelAPI
from keel.gitops.base import ApplyOptions, Outcome
from keel.gitops.source import Located, Problem
from keel.prompts.render import PromptSandbox, TemplateInvalid
from keel.prompts.spec import LATEST, MAX_VERSION, NAME_PATTERN, PromptContent, valid_label


class PromptFile(PromptContent):
    """One prompt as written in YAML: its content plus name, labels and commit message."""

    name: str = Field(pattern=NAME_PATTERN)
    labels: dict[str, int | Literal["latest"]] = Field(default_factory=dict)
    message: str | None = Field(None, max_length=2000)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, int | str]) -> dict[str, int | str]:
        for label, target in value.items():
            if not valid_label(label):
                raise ValueError(
                    f"invalid label {label!r}: use lowercase letters, digits, '.', '_' and '-'"
                )
            if label == LATEST:
                raise ValueError("'latest' is maintained automatically and cannot be set")
            if isinstance(target, int) and not 1 <= target <= MAX_VERSION:
                raise ValueError(f"label {label!r}: version numbers start at 1")
        return value

    def content(self) -> PromptContent:
        return PromptContent.model_validate(self.model_dump(exclude={"name", "labels", "message"}))


@dataclass
class _Planned:
    spec: PromptFile
    entry: Located
    message: str
    create: bool = False
    restores: bool = False
    version_after: int = 0  # the newest version after this apply
    content_version: int = 0  # the version holding the file's content after this apply
    moves: list[tuple[str, int | None, int]] = field(default_factory=list)


def _path(name: str) -> str:
    return f"/api/prompts/{quote(name, safe='')}"


class PromptsHandler:
    section = "prompts"

    def __init__(self, options: ApplyOptions):
        self._options = options
        self._sandbox = PromptSandbox()
        self._specs: list[tuple[PromptFile, Located]] = []
        self._seen: dict[str, Located] = {}
        self._plan: list[_Planned] = []
        self._declared: Located | None = None
        self._current: dict[str, dict[str, Any]] = {}
        self._archive: list[str] = []

    def declare(self, where: Located) -> None:
        if self._declared is None:
            self._declared = where

    def load(self, entry: Located) -> list[Problem]:
        if not isinstance(entry.value, dict):
            return [entry.problem("a prompt must be a mapping (name, messages, …)")]
        data: dict[str, Any] = dict(entry.value)
        if entry.loc == () and "name" not in data:
            data["name"] = entry.document.path.stem  # a one-prompt file is named after itself
        try:
            spec = PromptFile.model_validate(data)
        except ValidationError as exc:
            return entry.validation_problems(exc)
        if spec.name in self._seen:
            other = self._seen[spec.name]
            first = f"{other.document.path}:{other.document.line(other.loc)}"
            return [entry.problem(f"prompt {spec.name!r} is also defined at {first}", ("name",))]
        try:
            self._sandbox.compile(spec.content())
        except TemplateInvalid as exc:
            loc = ("messages", exc.index, "content")
            line = _template_line(entry, loc, exc.lineno)
            message = f"template error on line {exc.lineno}: {exc.problem}"
            return [entry.problem(message, loc, line=line)]
        self._seen[spec.name] = entry
        self._specs.append((spec, entry))
        return []

    async def plan(self, api: KeelAPI) -> list[Problem]:
        listed = await api.call("GET", "/api/prompts", params={"include_archived": "true"})
        current = {p["name"]: p for p in listed["data"]}
        self._current = current
        problems: list[Problem] = []
        for spec, entry in self._specs:
            default = f"keel apply {entry.document.path.name}"
            planned = _Planned(spec, entry, self._options.message or spec.message or default)
            info = current.get(spec.name)
            if info is None:
                planned.create, planned.version_after = True, 1
                labels: dict[str, int] = {}
            else:
                labels = info["labels"]
                latest = info["latest_version"]
                holding = await _version_holding(api, spec, latest)
                planned.restores = bool(info["archived"])
                planned.create = holding is None or planned.restores
                planned.version_after = latest + 1 if planned.create else latest
                if not planned.create and holding is not None:
                    planned.content_version = holding
            if planned.create:
                planned.content_version = planned.version_after
            if self._options.labels:
                for label, target in spec.labels.items():
                    version = planned.content_version if target == LATEST else int(target)
                    if version > planned.version_after:
                        problems.append(
                            entry.problem(
                                f"version {version} does not exist (the newest would be "
                                f"{planned.version_after})",
                                ("labels", label),
                            )
                        )
                    elif labels.get(label) != version:
                        planned.moves.append((label, labels.get(label), version))
            self._plan.append(planned)
        return problems

    async def apply(self, api: KeelAPI, *, dry_run: bool) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for planned in self._plan:
            name = planned.spec.name
            if planned.create:
                version = planned.version_after
                if not dry_run:
                    body = {**planned.spec.content().canonical(), "message": planned.message}
                    answer = await api.call("POST", f"{_path(name)}/versions", json=body)
                    version = answer["version"]["version"]
                verb = "would create" if dry_run else "created"
                extra = " (restores the archived prompt)" if planned.restores else ""
                detail = f"{verb} version {version}{extra}"
                outcomes.append(Outcome(self.section, name, detail, True))
            elif planned.content_version != planned.version_after:
                detail = (f"no changes (the text is version {planned.content_version}'s; "
                          f"newest is {planned.version_after})")  # fmt: skip
                outcomes.append(Outcome(self.section, name, detail, False))
            else:
                detail = f"no changes (version {planned.version_after})"
                outcomes.append(Outcome(self.section, name, detail, False))
            for label, before, after in planned.moves:
                if not dry_run:
                    await api.call("PUT", f"{_path(name)}/labels/{label}", json={"version": after})
                verb = "would move" if dry_run else "moved"
                start = "unset" if before is None else str(before)
                outcomes.append(
                    Outcome(self.section, name, f"{verb} {label} {start} → {after}", True)
                )
        return outcomes

    async def plan_removals(self, api: KeelAPI) -> list[Problem]:
        if self._declared is None:
            return []
        kept = {spec.name for spec, _ in self._specs}
        self._archive = sorted(
            name
            for name, info in self._current.items()
            if name not in kept and not info["archived"]
        )
        return []

    async def remove(self, api: KeelAPI, *, dry_run: bool) -> list[Outcome]:
        outcomes = []
        for name in self._archive:
            if not dry_run:
                await api.call("POST", f"{_path(name)}/archive")
            verb = "would archive" if dry_run else "archived"
            outcomes.append(
                Outcome(self.section, name, f"{verb} (not in the files; --prune)", True)
            )
        return outcomes


async def _version_holding(api: KeelAPI, spec: PromptFile, latest: int) -> int | None:
    """The newest version whose content equals the file's; None when none does."""
    wanted = spec.content().content_hash()
    newest = await api.call("GET", _path(spec.name), params={"version": latest})
    if _content_of(newest).content_hash() == wanted:
        return latest
    listed = await api.call("GET", f"{_path(spec.name)}/versions", params={"content": "true"})
    for version in listed["data"]:  # newest first
        if _content_of(version).content_hash() == wanted:
            return int(version["version"])
    return None


def _content_of(version: dict[str, Any]) -> PromptContent:
    fields = ("messages", "variables", "allow_extra_variables", "config")
    return PromptContent.model_validate({key: version[key] for key in fields})


def _template_line(entry: Located, loc: tuple[str | int, ...], lineno: int) -> int:
    """The file line of a template's line `lineno`, for block and plain scalars alike."""
    node = entry.document.node((*entry.loc, *loc))
    first = node.start_mark.line + 1
    if isinstance(node, yaml.ScalarNode) and node.style in ("|", ">"):
        first += 1  # the text starts on the line after the | or > indicator
    return first + lineno - 1
