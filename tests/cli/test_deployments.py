"""`keel deployments list`, `keel deploy` and /readyz when a local model server crashloops."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from starlette.types import ASGIApp
from typer.testing import CliRunner

from keel.auth.keys import DEFAULT_PROJECT
from keel.cli import deployments as cli_deployments
from keel.cli.app import app
from keel.registry.specs import DeploymentSpec, ModelVersionSpec, ProviderSpec, RouteSpec
from keel.server.app import create_app
from tests.deploy.conftest import FAST, Standin
from tests.support.app import build_services
from tests.support.http import served_in_thread
from tests.support.upstream import FakeUpstream

runner = CliRunner()
CHECK = "deployment:standin@1"


@pytest.fixture
def keel_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A running Keel whose one local deployment is a stand-in that segfaults on cue."""
    screen = io.StringIO()
    monkeypatch.setattr(cli_deployments, "out", Console(file=screen, width=250))
    standin = Standin(tmp_path, tmp_path / "crash")
    standin.crash_flag.touch()
    found: dict[str, Any] = {"screen": screen, "standin": standin}

    async def make_app() -> ASGIApp:
        upstream = FakeUpstream()
        await upstream.start()
        services, key = build_services(tmp_path / "data", upstream.base_url)
        manager = services.deployments
        manager.options = replace(manager.options, restart=FAST, launcher=standin.launcher)
        registry, actor = services.registry, "test"
        local = ProviderSpec(name="local", kind="local", config={"model_path": "standin.gguf"})
        registry.put_provider(DEFAULT_PROJECT, local, actor)
        version = ModelVersionSpec(name="standin", provider="local", upstream_model="standin")
        model, _ = registry.add_model_version(DEFAULT_PROJECT, version, actor)
        registry.put_deployment(DEFAULT_PROJECT, DeploymentSpec(model=model["ref"]), actor)
        registry.put_route(
            DEFAULT_PROJECT, RouteSpec(name="standin", targets={model["ref"]: 100}), actor
        )
        await services.sync.refresh()  # starts the replica; its first start will fail
        found.update(key=key, manager=manager, loop=asyncio.get_running_loop())
        return create_app(services.settings, services=services)

    with served_in_thread(make_app) as base:
        found["base"] = base
        found["options"] = ["--url", base, "--key", found["key"]]
        try:
            yield found
        finally:
            stopping = found["manager"].stop_all()
            asyncio.run_coroutine_threadsafe(stopping, found["loop"]).result(30)


def readiness(api: dict[str, Any], state: str, seconds: float = 60) -> httpx.Response:
    """/readyz once the stand-in's deployment is in `state`."""
    deadline = time.monotonic() + seconds
    while True:
        response = httpx.get(f"{api['base']}/readyz")
        if response.json()["checks"][CHECK]["state"] == state or time.monotonic() > deadline:
            assert response.json()["checks"][CHECK]["state"] == state, response.text
            return response
        time.sleep(0.05)


def test_a_crashlooping_model_says_why_everywhere_and_serves_once_it_stops_crashing(
    keel_api: dict[str, Any],
) -> None:
    ready = readiness(keel_api, "crashlooping")
    assert ready.status_code == 503
    crash = ready.json()["checks"][CHECK]["last_crash"]
    assert crash["signal"] == "SIGSEGV"
    assert "killed by SIGSEGV (exit code -11)" in crash["cause"]
    assert any("standin: crashing on /v1/completions" in line for line in crash["log_tail"])

    result = runner.invoke(app, ["deployments", "list", *keel_api["options"]])
    assert result.exit_code == 0, result.output
    screen = keel_api["screen"].getvalue()
    assert "crashlooping" in screen
    assert "killed by SIGSEGV (exit code -11)" in screen
    assert "standin: crashing on /v1/completions" in screen  # the log's last lines
    assert "llama-standin-1-0.log" in screen

    result = runner.invoke(app, ["deploy", "standin@1", "--wait", "60", *keel_api["options"]])
    assert result.exit_code == 1
    assert "standin@1 is crashlooping: killed by SIGSEGV" in result.output

    headers = {"Authorization": f"Bearer {keel_api['key']}"}
    body = {"model": "standin", "messages": [{"role": "user", "content": "Say hi"}]}
    refused = httpx.post(f"{keel_api['base']}/v1/chat/completions", json=body, headers=headers)
    assert refused.status_code == 503
    assert "SIGSEGV" in refused.json()["error"]["message"]

    keel_api["standin"].crash_flag.unlink()  # nothing is restarted by hand
    assert readiness(keel_api, "ready").status_code == 200
    answer = httpx.post(f"{keel_api['base']}/v1/chat/completions", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "ok"
