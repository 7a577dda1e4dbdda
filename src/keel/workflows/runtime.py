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
    _http: httpx.AsyncClient | None = None

    @property
    def http(self) -> httpx.AsyncClient:
        """The client of `http` steps and tools, made on first use: building its TLS context
        reads the CA bundle (0.1 s and more), which a run without HTTP steps never needs."""
        if self._http is None:
            self._http = httpx.AsyncClient(follow_redirects=False)
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
