"""What a section handler of `keel apply` implements, and what applying reports.

A handler checks its entries offline, plans against the server, then applies the plan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from keel.gitops.api import KeelAPI
from keel.gitops.source import Located, Problem


@dataclass(frozen=True)
class ApplyOptions:
    message: str | None = None  # commit message for new versions (wins over the files)
    labels: bool = True  # False: create versions only (`keel prompts push`)
    # Remove what the server holds and the files no longer declare, in each section the
    # files name (an empty `providers: []` prunes every provider).
    prune: bool = False
    # One apply run's notes that sections share (e.g. versions a later section may name).
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    section: str
    name: str
    detail: str
    changed: bool

    def __str__(self) -> str:
        return f"{self.section} {self.name}: {self.detail}"


class Handler(Protocol):
    """One top-level section (`prompts:`, later `routes:` …) of the YAML files."""

    section: str

    def load(self, entry: Located) -> list[Problem]:
        """Check one list item of the section offline; keep it for plan() and apply()."""
        ...

    async def plan(self, api: KeelAPI) -> list[Problem]:
        """Read what the server holds and decide the changes; problems stop the apply."""
        ...

    async def apply(self, api: KeelAPI, *, dry_run: bool) -> list[Outcome]:
        """Make the planned changes (or only describe them)."""
        ...


@runtime_checkable
class Pruner(Protocol):
    """A handler that can remove what the files no longer declare (`keel apply --prune`)."""

    def declare(self, where: Located) -> None:
        """The files name this section at `where` (even as an empty list): prune within it."""
        ...

    async def plan_removals(self, api: KeelAPI) -> list[Problem]:
        """After every section planned: decide what to remove; problems stop the apply."""
        ...

    async def remove(self, api: KeelAPI, *, dry_run: bool) -> list[Outcome]:
        """Remove what was planned (sections run in reverse order: routes before models)."""
        ...


HandlerFactory = Callable[[ApplyOptions], Handler]
