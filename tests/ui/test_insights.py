"""Insights end to end: requests through a real `keel serve` (stub upstream, the bundled
MiniLM embedding them in the background, SQLite) turn into topics and an anomaly that a
person sees in the console, in real Chromium, and in `keel insights`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.insights.test_api import CITIES, PASSWORD, SERVICES, STRANGE, WEATHER
from tests.support.keel_process import KeelProcess, start_keel
from tests.support.tools import ToolProcess
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

    topics = keel.cli("insights", "topics", "--hours", "1")
    assert topics.returncode == 0, topics.stderr
    assert "password" in topics.stdout
    anomalies = keel.cli("insights", "anomalies", "--hours", f"{(now - split) / 3600}",
                         "--until", str(now), "--reference-hours", "1")  # fmt: skip
    assert anomalies.returncode == 0, anomalies.stderr
    assert strange in anomalies.stdout

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
            assert page.locator("svg.topic-map circle.point").count() == len(texts) + 1
            assert "password" in page.locator("#topics").inner_text()
            page.goto(f"{keel.base_url}/ui/insights?hours={hours}&until={now}")
            point = page.locator("svg.topic-map circle.point").first
            assert point.locator("title").text_content()  # the request, shown on hover
            assert strange in page.locator("#anomalies").inner_text()
            page.screenshot(path=str(SCREENSHOTS / "insights.png"), full_page=True)
            page.get_by_role("link", name=strange).click()
            page.get_by_role("link", name="Past requests most like this one").click()
            assert page.locator("#similar tbody tr").count() >= 5
        finally:
            browser.close()
