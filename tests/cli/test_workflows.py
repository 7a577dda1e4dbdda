"""`keel run` and `keel workflows list|show|runs|status|resume` against an in-process Keel."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from starlette.types import ASGIApp
from typer.testing import CliRunner

from keel.cli import workflows as cli_workflows
from keel.cli.app import app
from keel.jobs.executor import ExecutorOptions
from keel.server.admin.workflows import workflow_jobs
from keel.server.app import create_app
from keel.server.openai.files import job_system
from tests.support.app import build_services
from tests.support.http import served_in_thread
from tests.support.upstream import FakeUpstream

runner = CliRunner()
SPEC = {
    "name": "shout",
    "input": {"type": "object", "properties": {"text": {"type": "string"}}},
    "steps": [
        {"id": "upper", "transform": {"value": "{{ input.text | upper }}"}},
        {"id": "reply", "llm": {"model": "fake-model", "messages": [
            {"role": "user", "content": "{{ steps.upper.output }}"}]}},
    ],
}  # fmt: skip


@pytest.fixture
def keel_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    screen = io.StringIO()
    monkeypatch.setattr(cli_workflows, "out", Console(file=screen, width=250))
    found: dict[str, Any] = {"screen": screen}

    async def make_app() -> ASGIApp:
        upstream = FakeUpstream(echo=True)
        await upstream.start()
        services, key = build_services(tmp_path / "data", upstream.base_url)
        found.update(key=key, services=services)
        system = job_system(services)  # for runs as jobs (the app's lifespan is off here)
        system.executor.options = ExecutorOptions(heartbeat_seconds=0.05, poll_seconds=0.05)
        workflow_jobs(services)
        await system.start()
        return create_app(services.settings, services=services)

    with served_in_thread(make_app) as base:
        found["options"] = ["--url", base, "--key", found["key"]]
        found["base"] = base
        yield found


def test_run_follows_a_workflow_to_its_output_and_the_listings_show_it(
    keel_api: dict[str, Any],
) -> None:
    headers = {"Authorization": f"Bearer {keel_api['key']}"}
    created = httpx.post(
        f"{keel_api['base']}/api/workflows", json={"spec": SPEC}, headers=headers, timeout=60
    )
    assert created.status_code == 201, created.text
    ran = runner.invoke(app, ["run", "shout", "--input", '{"text": "hi there"}',
                              *keel_api["options"]])  # fmt: skip
    assert ran.exit_code == 0, ran.output
    screen = keel_api["screen"].getvalue()
    assert "succeeded" in screen
    assert '"HI THERE"' in screen  # the transform's checkpoint
    assert "HI THERE" in screen.split("Steps")[-1]  # and the model's echo as the output
    listed = runner.invoke(app, ["workflows", "list", *keel_api["options"]])
    assert listed.exit_code == 0
    assert "shout" in keel_api["screen"].getvalue()
    runs = runner.invoke(app, ["workflows", "runs", "shout", *keel_api["options"]])
    assert runs.exit_code == 0
    assert "wfr_" in keel_api["screen"].getvalue()


def test_run_as_a_job_follows_its_map_to_the_output(keel_api: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {keel_api['key']}"}
    spec = {"name": "each", "steps": [{"id": "m", "map": {"over": "{{ input.words }}", "steps": [
        {"id": "up", "transform": {"value": "{{ item | upper }}"}}]}}]}  # fmt: skip
    created = httpx.post(
        f"{keel_api['base']}/api/workflows", json={"spec": spec}, headers=headers, timeout=60
    )
    assert created.status_code == 201, created.text
    ran = runner.invoke(app, ["run", "each", "--job", "--input", '{"words": ["a", "b", "c"]}',
                              *keel_api["options"]])  # fmt: skip
    assert ran.exit_code == 0, ran.output
    screen = keel_api["screen"].getvalue()
    assert "is driven by job workflow.run" in screen
    assert "succeeded" in screen
    assert '"A",' in screen.split("Steps")[-1]


def test_every_workflow_command_has_help() -> None:
    for command in (["run", "--help"], ["workflows", "--help"], ["workflows", "resume", "--help"]):
        shown = runner.invoke(app, command)
        assert shown.exit_code == 0
        assert "Usage" in shown.output


def test_a_run_with_input_that_fails_the_schema_exits_non_zero(keel_api: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {keel_api['key']}"}
    httpx.post(
        f"{keel_api['base']}/api/workflows", json={"spec": SPEC}, headers=headers, timeout=60
    )
    ran = runner.invoke(app, ["run", "shout", "--input", '{"text": 5}', *keel_api["options"]])
    assert ran.exit_code == 1
    assert "does not match its JSON Schema" in ran.output
