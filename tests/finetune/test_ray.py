"""Fine-tuning on a real local Ray cluster: with KEEL_RAY_ADDRESS set, a job created through
the official SDK trains in a Ray actor (another process), and Keel records its steps and
checkpoints, merges the adapter that comes back and registers the new version."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import httpx
import openai

from keel.finetune.executor import TrainingOptions
from keel.finetune.ray_train import RayTraining
from keel.server.app import create_app
from keel.server.openai.fine_tuning import fine_tune_system
from keel.server.services import stop_services
from tests.finetune.conftest import add_bundled_base, task_file
from tests.support.app import build_services
from tests.support.ray_cluster import ray_head

TINY = {"lora": {"max_seq_len": 64, "eval_every": 1, "threads": 1}}


async def test_a_job_trains_in_a_ray_actor_and_keel_registers_its_version(
    tmp_path: Path, base_cache: Path, scanners: Any
) -> None:
    with ray_head(tmp_path / "ray-head.log") as address:
        services, key = build_services(tmp_path / "data", "http://127.0.0.1:9/v1",
                                       ray_address=address)  # fmt: skip
        registry = services.registry
        add_bundled_base(registry)
        app = create_app(services.settings, services=services)
        system = fine_tune_system(services)
        trainer = system.runner.trainer
        assert isinstance(trainer, RayTraining)  # KEEL_RAY_ADDRESS chose Ray
        system.executor.options = TrainingOptions(heartbeat_seconds=0.2, poll_seconds=0.1)
        system.runner.base_cache = base_cache
        system.runner.scanners = lambda: scanners
        await system.start()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://keel/v1") as http:
                client = openai.AsyncOpenAI(api_key=key, base_url="http://keel/v1",
                                            http_client=http)  # fmt: skip
                uploaded = await client.files.create(
                    file=("train.jsonl", task_file(12)), purpose="fine-tune"
                )
                job = await client.fine_tuning.jobs.create(
                    model="smollm2",
                    training_file=uploaded.id,
                    hyperparameters={"n_epochs": 1, "batch_size": 4},  # 3 steps
                    # No replica serves the version in this test: it is about where it trains.
                    extra_body={**TINY, "evaluation": {"enabled": False}},
                )
                for _ in range(12000):  # a bound, not a timing: a Ray worker loads the base
                    job = await client.fine_tuning.jobs.retrieve(job.id)
                    if job.status in ("succeeded", "failed", "cancelled"):
                        break
                    await asyncio.sleep(0.05)
                checkpoints = await client.fine_tuning.jobs.checkpoints.list(job.id)
        finally:
            await system.stop()
            await stop_services(services)
            # Training joined this process to the cluster: leave it before the cluster
            # stops, or Ray ends this process once it has lost the cluster for a minute.
            import ray

            ray.shutdown()
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == "smollm2@2"
    assert trainer.last_worker is not None
    assert not trainer.last_worker.endswith(f":{os.getpid()}")  # another process trained
    assert checkpoints.data  # the actor's reports, recorded by Keel
    losses = sorted((c.step_number, c.metrics.valid_loss) for c in checkpoints.data)
    assert losses[-1][1] < losses[0][1]
    tags = registry.get_model("default", "smollm2@2")["tags"]
    assert tags == ["fine-tuned", "base:smollm2@1", f"job:{job.id}"]
