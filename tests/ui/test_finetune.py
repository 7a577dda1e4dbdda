"""The fine-tuning console page: every job with its status, and one job's loss curves,
checkpoints, scan findings and the lineage of the version it made."""

from __future__ import annotations

from keel.finetune.executor import KIND
from keel.server.openai.fine_tuning import fine_tune_system
from tests.ui.conftest import Console, login


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
