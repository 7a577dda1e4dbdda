"""A fine-tuning job trained on a real local Ray cluster, end to end through Keel: the job
is created through the official SDK, its training runs in a Ray actor (a process of the
cluster, not Keel's), the best adapter comes back through Ray's object store, and Keel
merges it into a GGUF and registers the new version, as after a local training.

    python bench/finetune_ray.py                # a tiny job: 12 conversations, a few steps
    python bench/finetune_ray.py --cancel       # cancelled as its first step is reported

It is a bench, not a test: loading the base and training even two steps takes 40-90 s on
the shared 2 cores, over what CI can spend. Prints JSON: the job's outcome, where it
trained, its steps and checkpoints, the version registered, and the wall times.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import openai

from keel.finetune.executor import TrainingOptions
from keel.finetune.ray_train import RayTraining
from keel.server.app import create_app
from keel.server.openai.fine_tuning import fine_tune_system
from keel.server.services import stop_services
from tests.finetune.conftest import add_bundled_base, task_file
from tests.support.app import build_services
from tests.support.ray_cluster import processes_titled, ray_head

TINY = {"lora": {"max_seq_len": 64, "eval_every": 1, "threads": 1}}


def watch_actors(seen: set[int], stop: threading.Event) -> None:
    """Pids of the Ray actor processes that train (Ray titles them ray::TrainingActor)."""
    while not stop.is_set():
        seen.update(processes_titled("TrainingActor"))
        time.sleep(0.2)


async def run(args: argparse.Namespace, address: str, data_dir: Path) -> dict[str, Any]:
    services, key = build_services(data_dir, "http://127.0.0.1:9/v1", ray_address=address)
    registry = services.registry
    add_bundled_base(registry, "bench")
    app = create_app(services.settings, services=services)
    system = fine_tune_system(services)
    assert isinstance(system.runner.trainer, RayTraining)  # KEEL_RAY_ADDRESS chose Ray
    system.executor.options = TrainingOptions(heartbeat_seconds=0.2, poll_seconds=0.1)
    system.runner.base_cache = data_dir.parent / "bases"
    await system.start()
    seen: set[int] = set()
    stop = threading.Event()
    watcher = threading.Thread(target=watch_actors, args=(seen, stop), daemon=True)
    watcher.start()
    started = time.monotonic()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://keel/v1") as http:
            client = openai.AsyncOpenAI(api_key=key, base_url="http://keel/v1", http_client=http)
            uploaded = await client.files.create(
                file=("train.jsonl", task_file(args.examples)), purpose="fine-tune"
            )
            job = await client.fine_tuning.jobs.create(
                model="smollm2",
                training_file=uploaded.id,
                hyperparameters={"n_epochs": args.epochs, "batch_size": 4},
                # Nothing serves the new version here: this measures the training on Ray.
                extra_body={**TINY, "evaluation": {"enabled": False}},
            )
            cancelled_at = None
            while True:
                job = await client.fine_tuning.jobs.retrieve(job.id)
                if job.status in ("succeeded", "failed", "cancelled"):
                    break
                if args.cancel and cancelled_at is None:
                    events = await client.fine_tuning.jobs.list_events(job.id, limit=5)
                    if any(e.type == "metrics" for e in events.data):
                        await client.fine_tuning.jobs.cancel(job.id)
                        cancelled_at = time.monotonic()
                await asyncio.sleep(0.1)
            ended = time.monotonic()
            events = await client.fine_tuning.jobs.list_events(job.id, limit=100)
            checkpoints = await client.fine_tuning.jobs.checkpoints.list(job.id)
    finally:
        stop.set()
        watcher.join()
        await system.stop()
        await stop_services(services)
    models = [m["ref"] for m in registry.list_models("default")]
    registered = None
    if job.fine_tuned_model:
        registered = registry.get_model("default", job.fine_tuned_model)
    steps = [e.data for e in reversed(events.data) if e.type == "metrics"]
    return {
        "status": job.status,
        "error": job.error.message if job.error else None,
        "fine_tuned_model": job.fine_tuned_model,
        "models": models,
        "version_tags": registered["tags"] if registered else None,
        "trained_on": {
            "ray_actor_pids": sorted(seen),
            "keel_pid": os.getpid(),
            "worker": system.runner.trainer.last_worker,
        },
        "steps": [s.get("step") for s in steps if isinstance(s, dict)],
        "checkpoints": [
            {"step": c.step_number, "valid_loss": c.metrics.valid_loss} for c in checkpoints.data
        ],
        "trained_tokens": job.trained_tokens,
        "seconds": round(ended - started, 1),
        "cancel_to_end_seconds": round(ended - cancelled_at, 1) if cancelled_at else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--cancel", action="store_true", help="cancel at the first step")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="keel-ft-ray-"))
    cluster_started = time.monotonic()
    with ray_head(root / "ray-head.log") as address:
        cluster_seconds = time.monotonic() - cluster_started
        result = asyncio.run(run(args, address, root / "data"))
    result["cluster_start_seconds"] = round(cluster_seconds, 1)
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
