"""The knowledge console in real Chromium, against a real `keel serve` with the bundled
SmolLM2 and MiniLM: search a base, ask it a question, read the citations, open the trace
with its retrieval span, and follow an ingestion job."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.knowledge.samples import MARKDOWN
from tests.support.keel_process import KeelProcess, start_keel
from tests.ui.test_browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, _browser_or_skip

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def keel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeelProcess]:
    data_dir: Path = tmp_path_factory.mktemp("keel-kb-console") / "data"
    process = start_keel(data_dir, env={"KEEL_TRACE_FLUSH_INTERVAL": "0.2"})
    yield process
    process.stop()


def _ingest_job(keel: KeelProcess) -> dict[str, Any]:
    """notes.txt ingested by a job through the API; returns the finished job."""
    auth = {"Authorization": f"Bearer {keel.api_key}"}
    staged = httpx.post(
        f"{keel.base_url}/api/kbs/handbook/files",
        params={"source": "notes.txt"},
        content=b"Parking is free after 6pm.\n",
        headers=auth,
        timeout=60,
    )
    assert staged.status_code == 201, staged.text
    job = keel.api(
        "POST", "/api/kbs/handbook/ingest", {"files": [{"file_id": staged.json()["id"]}]}
    )
    deadline = time.monotonic() + 120
    while job["state"] not in ("succeeded", "failed") and time.monotonic() < deadline:
        time.sleep(0.2)
        job = keel.api("GET", f"/api/jobs/{job['id']}")
    assert job["state"] == "succeeded", job
    return job


def test_search_ask_cite_and_follow_an_ingestion_job(keel: KeelProcess) -> None:
    sync_playwright = _browser_or_skip()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    keel.api("POST", "/api/kbs", {"name": "handbook"})
    uploaded = httpx.post(
        f"{keel.base_url}/api/kbs/handbook/documents",
        params={"source": "handbook.md"},
        content=MARKDOWN,
        timeout=60,
        headers={"Authorization": f"Bearer {keel.api_key}"},
    )
    assert uploaded.status_code == 200, uploaded.text
    job = _ingest_job(keel)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.goto(f"{keel.base_url}/ui/")
            page.get_by_label("API key").fill(keel.api_key)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{keel.base_url}/ui/")

            page.goto(f"{keel.base_url}/ui/kbs/handbook")
            row = page.locator("#ingest-jobs tbody tr").first
            assert job["id"] in row.inner_text()
            assert "succeeded" in row.inner_text()
            page.get_by_label("Query").fill("paid holiday")
            page.get_by_role("button", name="Search").click()
            page.wait_for_selector("ol.hits mark")
            assert "28 days" in page.locator("ol.hits mark").first.inner_text()

            page.get_by_label("Question (answered from this base, with citations)").fill(
                "How many days of paid holiday does everyone get?"
            )
            page.locator("#a-model").select_option("smollm2")
            page.get_by_role("button", name="Ask").click()
            page.wait_for_selector("#citations")
            assert page.locator("#answer").inner_text().strip()
            first = page.locator("#citations li").first
            assert "handbook.md" in first.inner_text()
            page.screenshot(path=str(SCREENSHOTS / "knowledge-answer.png"), full_page=True)

            page.locator("#trace-link").click()
            deadline = time.monotonic() + 30
            while "keel.retrieve" not in page.content() and time.monotonic() < deadline:
                time.sleep(0.3)  # the trace is written a moment after the answer
                page.reload()
            assert "keel.retrieve" in page.content()
            page.screenshot(path=str(SCREENSHOTS / "knowledge-trace.png"), full_page=True)
        finally:
            browser.close()
