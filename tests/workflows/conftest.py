from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from keel.auth.keys import Principal
from keel.server.services import Services, stop_services
from keel.workflows.service import Workflows
from tests.support.app import build_services
from tests.support.tools import ToolServer
from tests.support.upstream import FakeUpstream


@dataclass
class Bench:
    services: Services
    flows: Workflows
    principal: Principal
    upstream: FakeUpstream
    tools: ToolServer

    def define(self, spec: dict[str, object], kind: str = "workflow") -> dict[str, object]:
        return self.flows.put(self.principal.project_id, kind, spec)  # type: ignore[arg-type]


@pytest.fixture
async def tools() -> AsyncIterator[ToolServer]:
    server = await ToolServer().start()
    yield server
    await server.stop()


@pytest.fixture
async def bench(tmp_path: Path, upstream: FakeUpstream, tools: ToolServer) -> AsyncIterator[Bench]:
    """Workflows over the real store (SQLite) and gateway, a fake upstream, local tools."""
    upstream.echo = True
    services, key = build_services(tmp_path, upstream.base_url)
    principal = await services.keys.verify(key)
    recorder = services.tracing.recorder
    flows = Workflows(
        services.database,
        services.gateway,
        principal_of=services.keys.principal_of,
        trace_sink=recorder.submit,
        recover_interval=0.05,
        lease_s=0.5,
    )
    flows.runtime.environ = {"TOOL_TOKEN": "s3cret"}
    yield Bench(services, flows, principal, upstream, tools)
    await flows.close()
    await stop_services(services)
