"""The evaluation console: datasets with their versions and items linked to source traces,
runs with per-item results, and a comparison with differences, diffs and distribution
charts; a viewer may read it all, another project sees none of it."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from keel.jobs.executor import ExecutorOptions
from keel.server.openai.files import job_system
from tests.server.admin.test_traces import record
from tests.support.keel_process import start_keel
from tests.ui.conftest import Console, login, post_form
from tests.ui.test_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    SCREENSHOTS,
    _browser_or_skip,
    wait_for_trace,
)


async def finish(client: httpx.AsyncClient, headers: dict[str, str], run_id: str) -> None:
    for _ in range(3000):
        run = (await client.get(f"/api/experiments/{run_id}", headers=headers)).json()
        if run["state"] in ("succeeded", "failed"):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("run did not finish")


async def test_datasets_runs_and_a_comparison_in_the_console(console: Console) -> None:
    system = job_system(console.services)
    system.executor.options = ExecutorOptions(concurrency=4, heartbeat_seconds=0.05,
                                              poll_seconds=0.05)  # fmt: skip
    await system.start()
    trace = record(42, input=json.dumps([{"role": "user", "content": "Capital of Peru?"}]),
                   output="Lima", route="chat")  # fmt: skip
    console.services.tracing.store.write([trace])
    admin = {"Authorization": f"Bearer {console.keys['admin']}"}
    try:
        async with console.client() as client:
            made = await client.post("/api/datasets/capitals/from-traces",
                                     json={"route": "chat"}, headers=admin)  # fmt: skip
            assert made.status_code == 200, made.text
            await client.post("/api/datasets/capitals/items", headers=admin, json={
                "items": [{"input": "Paris", "expected": "Paris"}]})  # fmt: skip
            runs: list[Any] = []
            for _ in range(2):  # the same subject twice: nothing changes between them
                body = {"name": "cap", "dataset": "capitals", "label": None,
                        "subjects": [{"model": "fake-model"}],
                        "scorers": [{"type": "exact", "name": "accuracy"}]}  # fmt: skip
                started = await client.post("/api/experiments", json=body, headers=admin)
                assert started.status_code == 201, started.text
                run_id = started.json()["data"][0]["id"]
                await finish(client, admin, run_id)
                runs.append(run_id)

            await login(client, console.keys["viewer"])
            listing = await client.get("/ui/datasets")
            assert listing.status_code == 200
            assert 'href="/ui/datasets/capitals"' in listing.text
            detail = await client.get("/ui/datasets/capitals")
            assert detail.status_code == 200
            assert "v2" in detail.text
            assert "traces" in detail.text
            assert f'href="/ui/traces/{trace.trace["trace_id"]}"' in detail.text
            old = await client.get("/ui/datasets/capitals?version=1")
            assert "Capital of Peru?" in old.text
            assert "Paris" not in old.text.split('id="items"')[1]

            experiments = await client.get("/ui/experiments")
            assert all(f'href="/ui/experiments/{r}"' in experiments.text for r in runs)
            run = await client.get(f"/ui/experiments/{runs[0]}")
            assert run.status_code == 200
            assert re.search(r"accuracy \(exact\)</td><td>0.0..1.0</td><td>higher", run.text)
            assert "<svg" in run.text
            assert "Distribution of accuracy" in run.text

            compared = await client.get(f"/ui/experiments/compare?run={runs[0]}&run={runs[1]}")
            assert compared.status_code == 200, compared.text
            assert 'id="differences"' in compared.text
            assert "+0.0000" in compared.text
            assert "Items that changed (0 of 2)" in compared.text
            one = await client.get(f"/ui/experiments/compare?run={runs[0]}")
            assert one.status_code == 400
            missing = await client.get("/ui/datasets/nope")
            assert missing.status_code == 404
            assert "no dataset" in missing.text
    finally:
        await system.stop()


@pytest.mark.e2e
def test_evaluation_pages_in_a_real_browser(tmp_path: Path) -> None:
    """Real traces from SmolLM2 become a dataset; two runs are ticked and compared in
    Chromium; the item's link leads to its source trace."""
    sync_playwright = _browser_or_skip()
    keel = start_keel(tmp_path / "data", "--no-embeddings",
                      env={"KEEL_TRACE_FLUSH_INTERVAL": "0.2"})  # fmt: skip
    try:
        trace_ids = []
        for country in ("France", "Italy", "Japan"):
            answer = httpx.post(
                f"{keel.base_url}/v1/chat/completions",
                headers={"Authorization": f"Bearer {keel.api_key}"},
                json={"model": "smollm2", "max_tokens": 8, "temperature": 0,
                      "messages": [{"role": "user", "content": f"Capital of {country}?"}]},
                timeout=120,
            )  # fmt: skip
            assert answer.status_code == 200, answer.text
            trace_ids.append(answer.headers["x-keel-trace-id"])
        wait_for_trace(keel, trace_ids[-1])
        version = keel.api("POST", "/api/datasets/capitals/from-traces",
                           {"route": "smollm2", "q": "Capital of"})  # fmt: skip
        assert version["items"] == 3
        spec = {"name": "capitals", "dataset": "capitals",
                "subjects": [{"model": "smollm2", "params": {"max_tokens": 8}}],
                "scorers": [{"type": "rouge", "name": "overlap"}]}  # fmt: skip
        runs = [keel.api("POST", "/api/experiments", spec)["data"][0]["id"] for _ in range(2)]
        for run in runs:
            for _ in range(600):
                if keel.api("GET", f"/api/experiments/{run}")["state"] == "succeeded":
                    break
                time.sleep(0.2)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(f"{keel.base_url}/ui/")
                page.get_by_label("API key").fill(keel.api_key)
                page.get_by_role("button", name="Sign in").click()
                page.wait_for_url(f"{keel.base_url}/ui/")
                page.get_by_role("link", name="Datasets").click()
                page.get_by_role("link", name="capitals").click()
                assert page.locator("#items tbody tr").count() == 3
                page.screenshot(path=str(SCREENSHOTS / "eval-dataset.png"), full_page=True)
                page.locator("#items a").first.click()
                page.wait_for_selector("#span-table")
                assert page.url.split("/ui/traces/")[1] in trace_ids
                page.get_by_role("link", name="Experiments").click()
                for run in runs:
                    page.get_by_label(f"compare {run}").check()
                page.get_by_role("button", name="Compare").click()
                page.wait_for_selector("#differences")
                assert "+0.0000" in page.locator("#differences").inner_text()  # greedy: equal
                assert page.locator("svg.chart rect").count() >= 2
                page.screenshot(path=str(SCREENSHOTS / "eval-compare.png"), full_page=True)
                page.get_by_role("link", name=runs[0]).first.click()
                page.wait_for_selector("#scores")
                assert page.locator("#items tbody tr").count() == 3
                page.screenshot(path=str(SCREENSHOTS / "eval-run.png"), full_page=True)
            finally:
                browser.close()
    finally:
        keel.stop()


async def test_a_dataset_made_and_grown_by_hand_in_the_console(console: Console) -> None:
    async with console.client() as client:
        await login(client, console.keys["developer"])
        made = await post_form(client, "/ui/datasets", "/ui/datasets",
                               {"name": "by-hand", "description": "typed in",
                                "input": "Capital of Chile?", "expected": "Santiago"})  # fmt: skip
        assert made.status_code == 303, made.text
        assert made.headers["location"] == "/ui/datasets/by-hand"
        grown = await post_form(client, "/ui/datasets/by-hand", "/ui/datasets/by-hand/items",
                                {"input": "Capital of Peru?", "expected": "Lima"})  # fmt: skip
        assert grown.headers["location"] == "/ui/datasets/by-hand?version=2#items"
        page = (await client.get("/ui/datasets/by-hand?version=2")).text
        assert "Capital of Chile?" in page
        assert "Capital of Peru?" in page
        assert ">console<" in page
        empty = await post_form(client, "/ui/datasets/by-hand", "/ui/datasets/by-hand/items",
                                {"input": "  "})  # fmt: skip
        assert empty.status_code == 400
        assert "input is empty" in empty.text
    async with console.client() as viewer:
        await login(viewer, console.keys["viewer"])
        assert "Add an item" not in (await viewer.get("/ui/datasets/by-hand")).text
    versions = console.services.extras["evals"].datasets.get("default", "by-hand").versions
    assert [v.version for v in versions] == [2, 1]  # the refused item made no version
