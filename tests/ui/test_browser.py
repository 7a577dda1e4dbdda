"""The console in a real headless Chromium against a real `keel serve` with the bundled model.

Drives Debian's /usr/bin/chromium through Playwright (never a browser Playwright downloads):
sign in, see the overview chart count real requests, open a trace and its spans, move a
prompt label and see the next gateway call use it, change a route split, be refused as a
viewer. A screenshot of each page is saved to test-artifacts/screenshots/.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.keel_process import KeelProcess, start_keel

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("KEEL_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
PROMPT = {
    "messages": [{"role": "system", "content": "You help customers of {{ shop }}. Be brief."}],
    "variables": [{"name": "shop", "type": "string"}],
    "config": {"model": "smollm2", "max_tokens": 8, "temperature": 0.0},
}


def _browser_or_skip() -> Any:
    missing = None
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        missing = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = missing or "Playwright is not installed (pip install -e '.[dev]')"
        sync_playwright = None
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests cannot run in CI: {missing}")
        pytest.skip(missing)
    return sync_playwright


@pytest.fixture(scope="module")
def keel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeelProcess]:
    data_dir: Path = tmp_path_factory.mktemp("keel-console") / "data"
    process = start_keel(data_dir, "--no-embeddings", env={"KEEL_TRACE_FLUSH_INTERVAL": "0.2"})
    yield process
    process.stop()


def chat(keel: KeelProcess, shop: str) -> httpx.Response:
    response = httpx.post(
        f"{keel.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {keel.api_key}"},
        json={"prompt": {"name": "support", "variables": {"shop": shop}},
              "messages": [{"role": "user", "content": "Hi"}]},
        timeout=120,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    return response


def wait_for_trace(keel: KeelProcess, trace_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = httpx.get(f"{keel.base_url}/api/traces/{trace_id}",
                             headers={"Authorization": f"Bearer {keel.api_key}"})  # fmt: skip
        if response.status_code == 200:
            found: dict[str, Any] = response.json()
            return found
        time.sleep(0.2)
    raise AssertionError(f"trace {trace_id} was not written within 30 s")


def test_console_in_a_real_browser(keel: KeelProcess) -> None:
    sync_playwright = _browser_or_skip()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # What the test needs besides the bundled model: a prompt with two versions, a second
    # version of the model and a route to change the split of.
    for version, shop in ((1, "Keel Boats"), (2, "Pirate Keel")):
        body = {**PROMPT, "message": f"v{version}"}
        system = "You help customers of {{ shop }}" + f" ({shop})."
        body["messages"] = [{"role": "system", "content": system}]
        keel.api("POST", "/api/prompts/support/versions", body)
    keel.api("PUT", "/api/prompts/support/labels/production", {"version": 1})
    keel.api(
        "POST",
        "/api/models",
        {
            "name": "smollm2",
            "provider": "local",
            "upstream_model": "smollm2",
            "params": {"max_tokens": 16},
        },
    )
    keel.api("PUT", "/api/routes/canary", {"targets": {"smollm2@1": 100}})
    viewer_key = keel.api("POST", "/api/keys", {"name": "viewer", "role": "viewer"})["key"]

    # Real requests through the gateway, answered by SmolLM2.
    answers = [chat(keel, "Keel") for _ in range(3)]
    assert {a.headers["x-keel-prompt-version"] for a in answers} == {"1"}
    wait_for_trace(keel, answers[-1].headers["x-keel-trace-id"])

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            _admin_journey(browser, keel)
            _viewer_is_refused(browser, keel, viewer_key)
        finally:
            browser.close()


def _shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def _sign_in(page: Any, keel: KeelProcess, key: str) -> None:
    page.goto(f"{keel.base_url}/ui/")
    assert "/ui/login" in page.url
    _shot(page, "login")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{keel.base_url}/ui/")


def _admin_journey(browser: Any, keel: KeelProcess) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # the confirmations
    _sign_in(page, keel, keel.api_key)

    # The overview counts the requests made above.
    page.goto(f"{keel.base_url}/ui/?range=1h")
    chart = page.locator("#chart-requests")
    assert float(chart.get_attribute("data-total") or 0) >= 3
    assert chart.locator("svg polyline, svg circle").count() >= 1
    _shot(page, "overview")

    # The traces table, and one trace with its spans.
    page.goto(f"{keel.base_url}/ui/traces")
    _shot(page, "traces")
    page.locator("#traces-table tbody a").first.click()
    page.wait_for_selector("#span-table")
    assert page.locator(".span-row").count() >= 2
    assert page.locator("#prompt-link").inner_text() == "support@1"
    _shot(page, "trace")

    # Move the production label to version 2 (confirmed), and see the gateway use it.
    page.goto(f"{keel.base_url}/ui/prompts/support")
    page.locator("#m-label").fill("production")
    page.locator("#m-version").select_option("2")
    page.get_by_label("I confirm the move").check()
    page.get_by_role("button", name="Move label").click()
    page.wait_for_selector('[data-label="production"][data-version="2"]')
    _shot(page, "prompt")
    moved = chat(keel, "Keel")
    assert moved.headers["x-keel-prompt-version"] == "2"
    assert wait_for_trace(keel, moved.headers["x-keel-trace-id"])["prompt_version"] == 2
    page.goto(f"{keel.base_url}/ui/prompts/support/diff?from=1&to=2")
    assert page.locator("ins").count() >= 1
    _shot(page, "prompt-diff")
    page.goto(f"{keel.base_url}/ui/prompts/support/edit")
    page.get_by_role("button", name="Preview").click()
    page.wait_for_selector("#preview")
    _shot(page, "prompt-editor")

    # Change the canary route's split.
    page.goto(f"{keel.base_url}/ui/routes")
    form = page.locator("#route-canary form").first
    form.get_by_label("smollm2@1").fill("70")
    form.get_by_label("Add version").fill("smollm2@2")
    form.get_by_label("weight", exact=True).fill("30")
    form.get_by_role("button", name="Save split").click()
    page.wait_for_selector('#route-canary [data-weight="smollm2@2"]')
    route = keel.api("GET", "/api/routes/canary")
    assert route["targets"] == {"smollm2@1": 70, "smollm2@2": 30}
    _shot(page, "routes")

    for name in ("guard", "jobs", "audit", "keys", "users", "projects"):
        page.goto(f"{keel.base_url}/ui/{name}")
        assert page.locator("h1").count() == 1
        _shot(page, name)
    context.close()

    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = phone.new_page()
    _sign_in(page, keel, keel.api_key)
    page.goto(f"{keel.base_url}/ui/?range=1h")
    _shot(page, "overview-phone")
    phone.close()


def _viewer_is_refused(browser: Any, keel: KeelProcess, key: str) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    _sign_in(page, keel, key)
    page.goto(f"{keel.base_url}/ui/routes")
    assert page.get_by_role("button", name="Save split").count() == 0
    assert page.get_by_role("button", name="Roll back").count() == 0
    _shot(page, "viewer-routes")
    # The server refuses the write even when the viewer sends a well-formed form.
    status = page.evaluate(
        """async () => {
            const token = document.querySelector('input[name=csrf_token]').value;
            const body = new URLSearchParams({csrf_token: token, 'weight:smollm2@1': '1'});
            const response = await fetch('/ui/routes/canary/split', {method: 'POST', body});
            return response.status;
        }"""
    )
    assert status == 403
    page.goto(f"{keel.base_url}/ui/keys")
    assert "Refused" in page.locator("h1").inner_text()
    _shot(page, "viewer-refused")
    context.close()
    assert keel.api("GET", "/api/routes/canary")["targets"] == {"smollm2@1": 70, "smollm2@2": 30}
