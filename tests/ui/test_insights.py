"""Insights end to end: requests through a real `keel serve` (stub upstream, the bundled
MiniLM embedding them in the background, SQLite) turn into topics and an anomaly that a
person sees in the console, in real Chromium, and in `keel insights`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from markupsafe import escape

from keel.errors import KeelError
from keel.insights.jobs import KIND as TOPICS_KIND
from keel.server.admin.insights import insights_of
from keel.server.openai.files import job_system
from tests.insights.test_api import CITIES, PASSWORD, SERVICES, STRANGE, WEATHER
from tests.support.keel_process import KeelProcess, start_keel
from tests.support.tools import ToolProcess
from tests.ui.conftest import Console, login, post_form
from tests.ui.test_browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, _browser_or_skip


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ToolProcess]:
    process = ToolProcess(tmp_path_factory.mktemp("tools") / "counts.json").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def keel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeelProcess]:
    data_dir: Path = tmp_path_factory.mktemp("keel-insights-ui") / "data"
    process = start_keel(data_dir, "--no-local-model")
    yield process
    process.stop()


def _chat(keel: KeelProcess, text: str) -> str:
    response = httpx.post(f"{keel.base_url}/v1/chat/completions",
                          headers={"Authorization": f"Bearer {keel.api_key}"},
                          json={"model": "m", "messages": [{"role": "user", "content": text}]},
                          timeout=60)  # fmt: skip
    assert response.status_code == 200, response.text
    return str(response.headers["x-keel-trace-id"])


def _embedded(keel: KeelProcess, count: int) -> None:
    """Wait until the background embedder has stored `count` requests (its /metrics count)."""
    headers = {"Authorization": f"Bearer {keel.api_key}"}
    line = ""
    for _ in range(1200):
        metrics = httpx.get(f"{keel.base_url}/metrics", headers=headers, timeout=60).text
        line = next(x for x in metrics.splitlines() if x.startswith("keel_insights_embedded_total"))
        if float(line.split()[-1]) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"traffic never embedded: {line}")


def test_topics_and_anomalies_in_the_console_and_the_cli(
    keel: KeelProcess, tools: ToolProcess
) -> None:
    sync_playwright = _browser_or_skip()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    keel.api("PUT", "/api/providers/stub",
             {"kind": "openai_compat", "base_url": tools.base_url + "/v1"})  # fmt: skip
    keel.api("POST", "/api/models", {"name": "m", "provider": "stub", "upstream_model": "s"})
    first = time.time()
    texts = [t.format(c) for t in WEATHER for c in CITIES]
    texts += [t.format(s) for t in PASSWORD for s in SERVICES]
    for text in texts:
        _chat(keel, text)
    _embedded(keel, len(texts))
    split = time.time()
    time.sleep(max(1.0, (split - first) / 8))
    strange = _chat(keel, STRANGE)
    _embedded(keel, len(texts) + 1)
    now = time.time()
    # The page scores the newest tenth of its window against the rest: only the strange one.
    hours = 10 * (now - split) / 3600

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.goto(f"{keel.base_url}/ui/")
            page.get_by_label("API key").fill(keel.api_key)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{keel.base_url}/ui/")
            page.get_by_role("link", name="Insights").click()
            page.wait_for_url("**/ui/insights")
            # Opening the page clusters nothing: no run yet, and it says how to start one.
            assert "No topics computed yet" in page.locator("#topics-none").inner_text()
            assert page.locator("svg.topic-map").count() == 0
            topics_form = page.locator("form", has=page.get_by_role("button", name="Find topics"))
            topics_form.get_by_label("Window (hours)").fill("1")
            topics_form.get_by_role("button", name="Find topics").click()
            page.wait_for_url("**/ui/insights?hours=1*")
            # The page follows the job (it reloads itself while the job runs) to its result.
            page.locator("#topics").wait_for(timeout=60_000)
            assert "succeeded" in page.locator("#topics-job").inner_text()
            assert page.locator("svg.topic-map circle.point").count() == len(texts) + 1
            assert "password" in page.locator("#topics").inner_text()
            # Each topic's row has its colour on the map (drawn under the page's CSP).
            dot = page.locator("#topics svg.topic-dot circle").first
            assert dot.evaluate("c => getComputedStyle(c).fill") not in ("", "rgb(0, 0, 0)")
            page.goto(f"{keel.base_url}/ui/insights?hours={hours}&until={now}")
            # The stored run is shown whatever window the anomalies are scored over.
            assert page.locator("svg.topic-map circle.point").count() == len(texts) + 1
            point = page.locator("svg.topic-map circle.point").first
            assert point.locator("title").text_content()  # the request, shown on hover
            assert strange in page.locator("#anomalies").inner_text()
            page.screenshot(path=str(SCREENSHOTS / "insights.png"), full_page=True)
            page.get_by_role("link", name=strange).click()
            page.get_by_role("link", name="Past requests most like this one").click()
            assert page.locator("#similar tbody tr").count() >= 5
        finally:
            browser.close()

    shown = keel.cli("insights", "topics", "--show")  # the console's run, from a terminal
    assert shown.returncode == 0, shown.stderr
    assert "password" in shown.stdout
    topics = keel.cli("insights", "topics", "--hours", "1")
    assert topics.returncode == 0, topics.stderr
    assert "password" in topics.stdout
    anomalies = keel.cli("insights", "anomalies", "--hours", f"{(now - split) / 3600}",
                         "--until", str(now), "--reference-hours", "1")  # fmt: skip
    assert anomalies.returncode == 0, anomalies.stderr
    assert strange in anomalies.stdout


async def test_the_page_shows_the_newest_run_and_starts_one(console: Console) -> None:
    # In-process, without a job worker: the page shows a run's progress (and reloads itself)
    # while it is queued, and a failed run's reason; a viewer gets no form to start one.
    async with console.client() as client:
        await login(client, console.keys["viewer"])
        viewed = await client.get("/ui/insights")
        assert viewed.status_code == 200
        assert "No topics computed yet" in viewed.text
        assert 'action="/ui/insights/topics"' not in viewed.text
        assert "Refresh" not in viewed.headers
    async with console.client() as client:
        await login(client, console.keys["admin"])
        bad = await post_form(client, "/ui/insights", "/ui/insights/topics", {"hours": "-1"})
        assert bad.status_code == 400
        assert "invalid window" in bad.text
        started = await post_form(client, "/ui/insights", "/ui/insights/topics", {"hours": "2"})
        assert started.status_code == 303
        assert started.headers["location"] == "/ui/insights?hours=2"
        running = await client.get("/ui/insights?hours=2")
        assert running.headers["Refresh"] == "2; url=/ui/insights?hours=2"
        assert "queued" in running.text
        assert "0 of 1 steps" in running.text
        assert "No topics computed yet" not in running.text
        store = job_system(console.services).store
        job = store.claim("test", 60, [TOPICS_KIND])
        assert job is not None
        assert job.lease is not None
        with pytest.raises(KeelError) as empty:  # what the job's one step finds: no traffic
            insights_of(console.services).service.run_topics(job.id, "default", 0, 2**62)
        store.finish(job.id, job.lease, "failed", error=empty.value.message)
        failed = await client.get("/ui/insights?hours=2")
        assert "Refresh" not in failed.headers
        assert str(escape(empty.value.message)) in failed.text
        assert "No topics computed yet" in failed.text
