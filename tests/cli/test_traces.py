"""`keel traces tail|show|prune` and `keel stats` against a running in-process Keel."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from starlette.types import ASGIApp
from typer.testing import CliRunner

from keel.cli import traces as cli_traces
from keel.cli.app import app
from keel.server.app import create_app
from tests.support.app import build_services
from tests.support.http import served_in_thread
from tests.support.upstream import FakeUpstream
from tests.tracing.test_retention import traces_at

runner = CliRunner()


@pytest.fixture
def keel_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A running Keel over a fake upstream, with a rich console the test can read."""
    screen = io.StringIO()
    monkeypatch.setattr(cli_traces, "out", Console(file=screen, width=250))
    found: dict[str, Any] = {"screen": screen}

    async def make_app() -> ASGIApp:
        upstream = FakeUpstream()
        await upstream.start()
        services, key = build_services(tmp_path / "data", upstream.base_url)
        found.update(key=key, services=services)
        return create_app(services.settings, services=services)

    with served_in_thread(make_app) as base:
        found["base"] = base
        found["options"] = ["--url", base, "--key", found["key"]]
        yield found


def chat(api: dict[str, Any]) -> str:
    response = httpx.post(f"{api['base']}/v1/chat/completions",
                          headers={"Authorization": f"Bearer {api['key']}"},
                          json={"model": "fake-model", "stream": True, "user": "ada",
                                "messages": [{"role": "user", "content": "Say hi"}]})  # fmt: skip
    assert response.status_code == 200
    return response.headers["x-keel-trace-id"]


def stored(api: dict[str, Any], trace_id: str) -> None:
    headers = {"Authorization": f"Bearer {api['key']}"}
    for _ in range(200):
        if httpx.get(f"{api['base']}/api/traces/{trace_id}", headers=headers).status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError("trace never stored")


def test_show_prints_the_span_tree(keel_api: dict[str, Any]) -> None:
    trace_id = chat(keel_api)
    stored(keel_api, trace_id)
    result = runner.invoke(app, ["traces", "show", trace_id, *keel_api["options"]])
    assert result.exit_code == 0, result.output
    screen = keel_api["screen"].getvalue()
    assert trace_id in screen
    for name in ("chat fake-model", "keel.auth", "keel.route", "chat upstream-model"):
        assert name in screen
    assert "gen_ai.usage.output_tokens=5" in screen
    assert "output: Hello from the fake upstream." in screen


def test_tail_lists_new_requests_and_stats_aggregate_them(keel_api: dict[str, Any]) -> None:
    trace_id = chat(keel_api)
    stored(keel_api, trace_id)
    result = runner.invoke(app, ["traces", "tail", "--since", "1h", "--polls", "1",
                                 *keel_api["options"]])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert trace_id in keel_api["screen"].getvalue()
    result = runner.invoke(app, ["stats", "--since", "1h", "--by", "route",
                                 *keel_api["options"]])  # fmt: skip
    assert result.exit_code == 0, result.output
    screen = keel_api["screen"].getvalue()
    assert "Requests since 1h" in screen
    assert "fake-model" in screen
    assert "7" in screen  # input tokens of the one request
    assert "Online evaluation scores" not in screen  # none yet: no second table
    score = {"name": "format", "kind": "numeric", "number": 1.0, "label": None, "flag": True,
             "comment": None, "source": "evaluator", "author": "online:fake-model"}  # fmt: skip
    keel_api["services"].tracing.add_score("default", trace_id, score)
    result = runner.invoke(app, ["stats", "--since", "1h", "--by", "route",
                                 *keel_api["options"]])  # fmt: skip
    assert result.exit_code == 0, result.output
    scored = keel_api["screen"].getvalue().split("Online evaluation scores")[1]
    assert re.search(r"fake-model\s+│\s+format\s+│\s+1\s+│\s+1\s+│\s+100.0", scored)


def test_stats_by_model_version_groups_by_the_version_that_answered(
    keel_api: dict[str, Any],
) -> None:
    stored(keel_api, chat(keel_api))
    result = runner.invoke(app, ["stats", "--since", "1h", "--by", "model_version",
                                 *keel_api["options"]])  # fmt: skip
    assert result.exit_code == 0, result.output
    screen = keel_api["screen"].getvalue()
    assert "model_version" in screen  # the column is named as asked
    assert "fake-model" in screen  # the target that answered


def test_an_unknown_trace_is_a_clear_error(keel_api: dict[str, Any]) -> None:
    result = runner.invoke(app, ["traces", "show", "f" * 32, *keel_api["options"]])
    assert result.exit_code == 1
    assert "404" in result.output


def test_prune_counts_first_then_deletes_old_traces_of_every_project(
    keel_api: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_traces, "PRUNE_CALL_LIMIT", 7)  # several calls, the bar moves
    services = keel_api["services"]
    forty_days_ago = (time.time_ns() // 1000) - 40 * 86_400 * 1_000_000
    services.tracing.store.write(traces_at(*(forty_days_ago + n for n in range(30))))
    recent = chat(keel_api)
    stored(keel_api, recent)
    options = keel_api["options"]
    result = runner.invoke(app, ["traces", "prune", "--older-than", "30d", "--dry-run", *options])
    assert result.exit_code == 0, result.output
    assert "30 trace(s) started before" in keel_api["screen"].getvalue()
    assert services.tracing.store.count() == 31  # a dry run deletes nothing

    result = runner.invoke(app, ["traces", "prune", "--older-than", "30d", *options])
    assert result.exit_code == 0, result.output
    assert "deleted 30 trace(s) started before" in keel_api["screen"].getvalue()
    assert services.tracing.store.count() == 1
    stored(keel_api, recent)

    _, developer = services.keys.create_key(project_id="default", role="developer", name="dev")
    result = runner.invoke(app, ["traces", "prune", "--older-than", "30d",
                                 "--url", keel_api["base"], "--key", developer])  # fmt: skip
    assert result.exit_code == 1
    assert "403" in result.output
    assert "retention:write" in result.output


def test_prune_refuses_a_time_it_cannot_read(keel_api: dict[str, Any]) -> None:
    result = runner.invoke(app, ["traces", "prune", "--older-than", "last tuesday",
                                 *keel_api["options"]])  # fmt: skip
    assert result.exit_code == 1
    assert "400" in result.output
    assert "15m, 1h or 7d" in result.output
