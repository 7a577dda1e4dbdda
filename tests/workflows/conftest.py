from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from keel.auth.keys import Principal
from keel.providers.openai_compat import OpenAICompatProvider
from keel.routing.table import Target
from keel.server.services import Services, stop_services
from keel.workflows.service import Workflows
from tests.support.app import build_services
from tests.support.tools import ToolServer
from tests.support.upstream import FakeUpstream

PRICES = (2.0, 8.0)  # of "priced-model", per million input and output tokens


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


def priced(bench: Bench) -> None:
    """A model version with prices: the gateway and the spans cost calls to it alike."""
    provider = OpenAICompatProvider("priced", bench.upstream.base_url, read_timeout=2.0)
    bench.services.catalog.add_chat(
        Target("priced-model", provider, "upstream-model",
               input_price_per_m=PRICES[0], output_price_per_m=PRICES[1])
    )  # fmt: skip


def spans_of(trace: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every span of a stored trace by name (the tree flattened)."""
    found: dict[str, dict[str, Any]] = {}
    pending = list(trace["spans"])
    while pending:
        span = pending.pop()
        found[span["name"]] = span
        pending.extend(span.get("children", ()))
    return found
