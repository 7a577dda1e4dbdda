"""What steps reach outside the engine through: the gateway, an HTTP client, knowledge
bases, guard policies, other workflows and agents. Injected, so tests can swap parts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from keel.gateway.pipeline import Gateway

if TYPE_CHECKING:
    from keel.guard.service import GuardService
    from keel.knowledge.service import KnowledgeBases
    from keel.workflows.compiled import CompiledWorkflow
    from keel.workflows.engine import Engine, Result, RunState
    from keel.workflows.spec import AgentSpec


@dataclass
class Runtime:
    gateway: Gateway
    http: httpx.AsyncClient
    knowledge: Callable[[], KnowledgeBases | None] = lambda: None
    guard: GuardService | None = None
    # (project, name) → the newest version, compiled; NotFound when there is none
    workflow: Callable[[str, str], Awaitable[CompiledWorkflow]] | None = None
    agent: Callable[[str, str], Awaitable[AgentSpec]] | None = None
    environ: Mapping[str, str] = field(default_factory=dict)
    engine: Engine | None = None  # set once the engine is built around these steps
    # runs an agent inside a run: (spec, text, run, key) → result
    run_agent: Callable[[AgentSpec, str, RunState, str], Awaitable[Result]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
