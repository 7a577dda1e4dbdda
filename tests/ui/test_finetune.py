"""The fine-tuning console page: every job with its status, and one job's loss curves,
checkpoints, scan findings, the lineage of the version it made and its evaluation against
the base."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from keel.finetune.executor import KIND
from keel.jobs.executor import ExecutorOptions
from keel.server.openai.files import job_system
from keel.server.openai.fine_tuning import fine_tune_system
from tests.finetune.conftest import task_file
from tests.support.keel_process import start_keel
from tests.ui.conftest import Console, login
from tests.ui.test_browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, _browser_or_skip


async def test_a_job_shows_loss_curves_checkpoints_and_lineage(console: Console) -> None:
    service = fine_tune_system(console.services).service
    job = service.jobs.create(KIND, "default", "k1", {"model": "smollm2@1", "examples": 300}, [])
    service.runs.start(job.id, "default", "smollm2@1")
    for step, train, valid in ((10, 1.9, 1.5), (20, 0.9, 0.7), (30, 0.4, 0.35)):
        service.runs.add_checkpoint(job.id, step, step / 10, train, valid, f"/tmp/{step}")
    lineage = {"base_model": "smollm2@1", "training_file": "file_abc", "job_id": job.id,
               "metrics": {"first_valid_loss": 1.5, "best_valid_loss": 0.35,
                           "valid_loss_drop": 0.77, "trained_tokens": 61000, "seconds": 600.0,
                           "tokens_per_second": 101.7}}  # fmt: skip
    scan = {"examples": 300, "pii": 2, "secrets": 0, "injections": 1, "anonymized": 2,
            "lines": {"pii.EMAIL": [4, 9], "injection": [17]}}  # fmt: skip
    service.runs.update(job.id, phase="running", model_ref="smollm2@2", lineage=lineage, scan=scan)
    other = service.jobs.create(KIND, "default", "k1", {"model": "smollm2@1", "examples": 12}, [])
    async with console.client() as client:
        await login(client, console.keys["viewer"])
        listing = await client.get("/ui/finetune")
        assert listing.status_code == 200
        assert f'href="/ui/finetune/{job.id}"' in listing.text
        assert f'data-state="{job.id}">running<' in listing.text
        assert f'data-state="{other.id}">validating_files<' in listing.text
        detail = await client.get(f"/ui/finetune/{job.id}")
        assert detail.status_code == 200
        page = detail.text
        assert "<svg" in page
        assert "Loss per checkpoint" in page
        assert "<td>20</td><td>2.00</td><td>0.9000</td><td>0.7000</td>" in page
        assert "<dd>smollm2@2</dd>" in page
        assert "<dd>smollm2@1</dd>" in page
        assert "1.5 → 0.35 (77 % lower)" in page
        assert "2 PII, 0 secrets, 1 planted instructions" in page
        assert "injection: lines 17" in page
        nav = await client.get("/ui/finetune")
        assert 'href="/ui/finetune"' in nav.text
        missing = await client.get("/ui/finetune/ftjob_nothing")
        assert missing.status_code == 404
        assert "no fine-tuning job" in missing.text


async def test_a_job_shows_its_evaluation_runs_and_gate(console: Console) -> None:
    jobs = job_system(console.services)
    jobs.executor.options = ExecutorOptions(heartbeat_seconds=0.05, poll_seconds=0.05)
    await jobs.start()
    admin = {"Authorization": f"Bearer {console.keys['admin']}"}
    try:
        async with console.client() as client:
            items = [{"input": "Capital of Peru?", "expected": "Lima"},
                     {"input": "Capital of France?", "expected": "Paris"}]  # fmt: skip
            made = await client.post("/api/datasets", json={"name": "held", "items": items},
                                     headers=admin)  # fmt: skip
            assert made.status_code == 201, made.text
            body = {"name": "ft", "dataset": "held", "scorers": [{"type": "json_equal"}],
                    "subjects": [{"model": "fake-model", "name": "base"},
                                 {"model": "fake-model", "name": "tuned"}]}  # fmt: skip
            started = await client.post("/api/experiments", json=body, headers=admin)
            assert started.status_code == 201, started.text
            base, tuned = (r["id"] for r in started.json()["data"])
            for run_id in (base, tuned):
                for _ in range(3000):
                    got = await client.get(f"/api/experiments/{run_id}", headers=admin)
                    if got.json()["state"] == "succeeded":
                        break
                    await asyncio.sleep(0.02)
            service = fine_tune_system(console.services).service
            job = service.jobs.create(KIND, "default", "k1", {"model": "smollm2@1"}, [])
            claimed = service.jobs.claim("test", 60, [KIND])
            assert claimed is not None
            assert claimed.lease is not None
            evaluation = {"dataset": "held@1", "items": 2, "runs": {"base": base, "tuned": tuned},
                          "gate": "delta(json_equal.pass_rate)>=0.1"}  # fmt: skip
            service.jobs.finish(job.id, claimed.lease, "succeeded",
                                result={"evaluation": evaluation})  # fmt: skip
            failed = service.jobs.create(KIND, "default", "k1", {"model": "smollm2@1"}, [])
            claimed = service.jobs.claim("test", 60, [KIND])
            assert claimed is not None
            assert claimed.lease is not None
            not_served = {"evaluation": {"error": "smollm2@2 is not served"}}
            service.jobs.finish(failed.id, claimed.lease, "succeeded", result=not_served)

            await login(client, console.keys["viewer"])
            page = (await client.get(f"/ui/finetune/{job.id}")).text
            assert "Evaluation against the base" in page
            assert f'href="/ui/experiments/{base}"' in page
            assert f'href="/ui/experiments/{tuned}"' in page
            assert "2 held-out conversations (held@1)" in page
            # The same model twice: no gain, so the gate holds the canary back.
            assert 'data-gate="failed"' in page
            assert f"/ui/experiments/compare?run={base}&amp;run={tuned}" in page
            other = (await client.get(f"/ui/finetune/{failed.id}")).text
            assert "Not started: smollm2@2 is not served" in other
    finally:
        await jobs.stop()


@pytest.mark.e2e
def test_the_fine_tuning_page_in_a_real_browser(tmp_path: Path) -> None:
    """Against a real `keel serve`: a job created through the API, then cancelled, is
    listed under the console's Fine-tuning link and opens on its own page."""
    sync_playwright = _browser_or_skip()
    keel = start_keel(tmp_path / "data", "--no-embeddings")
    try:
        file_id = httpx.post(
            f"{keel.base_url}/v1/files",
            headers={"Authorization": f"Bearer {keel.api_key}"},
            files={"file": ("train.jsonl", task_file(12))},
            data={"purpose": "fine-tune"},
            timeout=60,
        ).json()["id"]
        job = keel.api(
            "POST", "/v1/fine_tuning/jobs", {"model": "smollm2", "training_file": file_id}
        )
        keel.api("POST", f"/v1/fine_tuning/jobs/{job['id']}/cancel")
        for _ in range(600):
            if keel.api("GET", f"/v1/fine_tuning/jobs/{job['id']}")["status"] == "cancelled":
                break
            time.sleep(0.5)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.goto(f"{keel.base_url}/ui/")
                page.get_by_label("API key").fill(keel.api_key)
                page.get_by_role("button", name="Sign in").click()
                page.wait_for_url(f"{keel.base_url}/ui/")
                page.get_by_role("link", name="Fine-tuning").click()
                page.wait_for_url(f"{keel.base_url}/ui/finetune")
                assert page.locator(f'[data-state="{job["id"]}"]').inner_text() == "cancelled"
                page.get_by_role("link", name=job["id"]).click()
                page.wait_for_selector("#checkpoints")
                assert page.locator("h1").inner_text() == f"Fine-tuning job {job['id']}"
                SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(SCREENSHOTS / "finetune.png"), full_page=True)
            finally:
                browser.close()
    finally:
        keel.stop()
