"""An in-process Keel over the scriptable upstream, its job executor running, for the
evaluation API's tests (the real model's end-to-end tests are in test_e2e.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from keel.jobs.executor import ExecutorOptions
from keel.server.app import create_app
from keel.server.openai.files import job_system
from keel.server.services import Services, stop_services
from tests.support.app import build_services
from tests.support.upstream import FakeUpstream


@dataclass
class Keel:
    http: httpx.AsyncClient
    services: Services
    upstream: FakeUpstream
    headers: dict[str, str]

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self.http.request(method, path, headers=self.headers, **kwargs)

    async def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.call(method, path, **kwargs)
        assert response.status_code < 300, (path, response.status_code, response.text)
        return response.json()

    async def finished(self, run_id: str) -> dict[str, Any]:
        for _ in range(3000):
            run = await self.ok("GET", f"/api/experiments/{run_id}")
            if run["state"] in ("succeeded", "failed", "cancelled"):
                return dict(run)
            await asyncio.sleep(0.02)
        raise AssertionError(f"run {run_id} did not finish")


@pytest.fixture
async def keel(tmp_path: Path, upstream: FakeUpstream) -> AsyncIterator[Keel]:
    upstream.echo = True  # each answer repeats the item's last message
    services, key = build_services(tmp_path, upstream.base_url)
    app = create_app(services.settings, services=services)
    system = job_system(services)
    system.executor.options = ExecutorOptions(
        concurrency=8, heartbeat_seconds=0.05, poll_seconds=0.05
    )
    await system.start()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://keel") as http:
        yield Keel(http, services, upstream, {"Authorization": f"Bearer {key}"})
    await system.stop()
    await stop_services(services)
