"""The workflows console in real Chromium: the list, a workflow's step graph and runs, a
failed run's timeline with inputs, outputs and the error, and resuming it after a fix."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.keel_process import KeelProcess, start_keel
from tests.support.tools import ToolProcess
from tests.ui.test_browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, _browser_or_skip

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ToolProcess]:
    process = ToolProcess(tmp_path_factory.mktemp("tools") / "counts.json").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def keel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeelProcess]:
    data_dir: Path = tmp_path_factory.mktemp("keel-workflows-ui") / "data"
    process = start_keel(data_dir, "--no-local-model", "--no-embeddings")
    yield process
    process.stop()


def _spec(tools_url: str, path: str) -> dict[str, Any]:
    return {
        "name": "triage",
        "input": {"type": "object", "properties": {"ticket": {"type": "string"}}},
        "steps": [
            {"id": "clean", "transform": {"value": "{{ input.ticket | trim | lower }}"}},
            {"id": "lookup", "http": {"url": tools_url + path,
                                      "body": {"q": "{{ steps.clean.output }}"}}},
            {"id": "reply", "llm": {"model": "m", "messages": [
                {"role": "user", "content": "{{ steps.clean.output }}"}]}},
        ],
    }  # fmt: skip


def _run(keel: KeelProcess) -> str:
    response = httpx.post(f"{keel.base_url}/api/workflows/triage/runs",
                          json={"input": {"ticket": "  Printer on FIRE "}},
                          headers={"Authorization": f"Bearer {keel.api_key}"},
                          timeout=60)  # fmt: skip
    assert response.status_code == 422, response.text  # the tool answers HTML
    runs = keel.api("GET", "/api/workflow-runs")["data"]
    run_id: str = runs[0]["id"]
    return run_id


def test_workflow_console_in_a_real_browser(keel: KeelProcess, tools: ToolProcess) -> None:
    sync_playwright = _browser_or_skip()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    keel.api("PUT", "/api/providers/stub",
             {"kind": "openai_compat", "base_url": tools.base_url + "/v1"})  # fmt: skip
    keel.api("POST", "/api/models", {"name": "m", "provider": "stub", "upstream_model": "s"})
    keel.api("POST", "/api/workflows", {"spec": _spec(tools.base_url, "/html")})
    run_id = _run(keel)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.goto(f"{keel.base_url}/ui/")
            page.get_by_label("API key").fill(keel.api_key)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{keel.base_url}/ui/")
            page.get_by_role("link", name="Workflows").click()
            page.get_by_role("link", name="triage").click()
            graph = page.locator("svg.workflow-graph")
            assert graph.locator("[data-step]").count() == 3
            assert page.locator(f'[data-status="{run_id}"]').inner_text() == "failed"
            page.screenshot(path=str(SCREENSHOTS / "workflow.png"), full_page=True)
            page.get_by_role("link", name=run_id).click()
            failed = page.locator('tr[data-step="lookup"]')
            assert "not JSON" in failed.inner_text()
            assert "printer on fire" in page.locator('tr[data-step="clean"]').inner_text()
            page.screenshot(path=str(SCREENSHOTS / "workflow_run_failed.png"), full_page=True)
            # the fix: the tool's URL, applied as version 2; then resume from the failed step
            keel.api("POST", "/api/workflows", {"spec": _spec(tools.base_url, "/echo")})
            page.get_by_role("button", name="Resume from lookup").click()
            page.wait_for_url(f"**/ui/workflow-runs/{run_id}?resumed=1")
            deadline = time.monotonic() + 30
            while page.locator("[data-run-status]").inner_text() != "succeeded":
                assert time.monotonic() < deadline, "the resumed run did not finish"
                time.sleep(0.3)
                page.reload()
            assert "seen printer on fire" in page.locator("[data-output]").inner_text()
            page.screenshot(path=str(SCREENSHOTS / "workflow_run_resumed.png"), full_page=True)
        finally:
            browser.close()
    counts = tools.counts()
    assert counts["model"].get("printer on fire") == 1  # once, after the resume
