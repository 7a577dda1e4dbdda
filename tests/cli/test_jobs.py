"""`keel jobs list|show|watch|cancel` against a running in-process Keel with a batch."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from rich.console import Console
from starlette.types import ASGIApp
from typer.testing import CliRunner

from keel.cli import jobs as cli_jobs
from keel.cli.app import app
from keel.server.app import create_app
from keel.server.openai.files import job_system
from tests.support.app import build_services
from tests.support.http import served_in_thread
from tests.support.upstream import FakeUpstream

runner = CliRunner()


@pytest.fixture
def keel_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    screen = io.StringIO()
    monkeypatch.setattr(cli_jobs, "out", Console(file=screen, width=250))
    found: dict[str, Any] = {"screen": screen}

    async def make_app() -> ASGIApp:
        upstream = FakeUpstream()
        await upstream.start()
        services, key = build_services(tmp_path / "data", upstream.base_url)
        await job_system(services).start()
        found.update(key=key, services=services)
        return create_app(services.settings, services=services)

    with served_in_thread(make_app) as base:
        found["options"] = ["--url", base, "--key", found["key"]]
        found["sdk"] = openai.OpenAI(api_key=found["key"], base_url=f"{base}/v1")
        yield found


def start_batch(api: dict[str, Any], lines: int) -> str:
    content = b"".join(
        json.dumps(
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]},
            }
        ).encode()
        + b"\n"
        for i in range(lines)
    )
    sdk: openai.OpenAI = api["sdk"]
    file = sdk.files.create(file=("in.jsonl", content), purpose="batch")
    batch = sdk.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    return batch.id


def test_watch_follows_a_batch_to_its_end_and_list_and_show_tell_its_story(
    keel_api: dict[str, Any],
) -> None:
    batch_id = start_batch(keel_api, 20)
    watched = runner.invoke(
        app, ["jobs", "watch", batch_id, "--interval", "0.05", *keel_api["options"]]
    )
    assert watched.exit_code == 0, watched.output
    screen = keel_api["screen"].getvalue()
    assert "succeeded: 20 done, 0 failed of 20" in screen
    assert "20/20" in screen  # the bar, full
    listed = runner.invoke(app, ["jobs", "list", *keel_api["options"]])
    assert listed.exit_code == 0
    assert batch_id in keel_api["screen"].getvalue()
    shown = runner.invoke(app, ["jobs", "show", batch_id, *keel_api["options"]])
    assert shown.exit_code == 0
    screen = keel_api["screen"].getvalue()
    assert "items: done 20" in screen
    assert "output_file_id: file_" in screen
    assert "created with 20 items" in screen


def test_cancel_of_an_unknown_job_says_how_to_find_one(keel_api: dict[str, Any]) -> None:
    result = runner.invoke(app, ["jobs", "cancel", "batch_nope", *keel_api["options"]])
    assert result.exit_code == 1
    assert "GET /api/jobs" in result.output


def test_a_finished_job_is_left_as_it_was_by_cancel(keel_api: dict[str, Any]) -> None:
    batch_id = start_batch(keel_api, 2)
    runner.invoke(app, ["jobs", "watch", batch_id, "--interval", "0.05", *keel_api["options"]])
    result = runner.invoke(app, ["jobs", "cancel", batch_id, *keel_api["options"]])
    assert result.exit_code == 0
    assert f"{batch_id}: succeeded (2 done so far)" in keel_api["screen"].getvalue()
