"""The fine-tuning API through the official openai SDK: create, retrieve, list, events,
checkpoints and cancel; bad input refused with a 4xx naming the cause before anything is
stored; a finished job registers a new model version with its lineage, audited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import select

from keel.auth.tables import AuditEvent
from keel.finetune.executor import TrainingOptions
from keel.registry.specs import ModelVersionSpec, ProviderSpec
from keel.server.app import create_app
from keel.server.openai.fine_tuning import fine_tune_system
from keel.server.services import Services, stop_services
from tests.finetune.conftest import task_file
from tests.support.app import build_services
from tests.support.upstream import FakeUpstream

TINY = {"lora": {"max_seq_len": 64, "eval_every": 1, "threads": 1}}


@dataclass
class Keel:
    client: openai.AsyncOpenAI
    services: Services


@pytest.fixture
async def keel(tmp_path: Path, upstream: FakeUpstream, base_cache: Path) -> AsyncIterator[Keel]:
    services, key = build_services(tmp_path, upstream.base_url)
    registry = services.registry
    registry.put_provider(
        "default",
        ProviderSpec(name="local", kind="local", config={"model_path": "bundled:smollm2"}),
        "test",
    )
    registry.add_model_version(
        "default",
        ModelVersionSpec(name="smollm2", provider="local", upstream_model="smollm2"),
        "test",
    )
    registry.put_provider(
        "default",
        ProviderSpec(name="remote", kind="openai_compat", base_url=upstream.base_url),
        "test",
    )
    registry.add_model_version(
        "default",
        ModelVersionSpec(name="remote-model", provider="remote", upstream_model="upstream-model"),
        "test",
    )
    app = create_app(services.settings, services=services)
    system = fine_tune_system(services)
    system.executor.options = TrainingOptions(heartbeat_seconds=0.2, poll_seconds=0.1)
    system.runner.base_cache = base_cache
    await system.start()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://keel/v1") as http:
        client = openai.AsyncOpenAI(api_key=key, base_url="http://keel/v1", http_client=http)
        yield Keel(client, services)
    await system.stop()
    await stop_services(services)


async def wait_for(client: openai.AsyncOpenAI, job_id: str, states: tuple[str, ...]) -> Any:
    # A bound, not a timing: model load, scan, training and the merge share 2 busy cores.
    for _ in range(36000):
        job = await client.fine_tuning.jobs.retrieve(job_id)
        if job.status in states:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {states}: {job.status} {job.error}")


async def test_a_job_through_the_sdk_ends_as_a_new_model_version(keel: Keel) -> None:
    uploaded = await keel.client.files.create(
        file=("train.jsonl", task_file(12)), purpose="fine-tune"
    )
    job = await keel.client.fine_tuning.jobs.create(
        model="smollm2",
        training_file=uploaded.id,
        hyperparameters={"n_epochs": 1, "batch_size": 8},
        extra_body=TINY,
    )
    assert job.status in ("validating_files", "queued", "running")
    assert job.model == "smollm2@1"
    done = await wait_for(keel.client, job.id, ("succeeded", "failed", "cancelled"))
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == "smollm2@2"
    assert done.trained_tokens
    assert done.trained_tokens > 0
    events = await keel.client.fine_tuning.jobs.list_events(job.id, limit=100)
    messages = [e.message for e in events.data]
    assert any(m.startswith("scanned 12 examples") for m in messages)
    assert any(m == "registered smollm2@2" for m in messages)
    checkpoints = await keel.client.fine_tuning.jobs.checkpoints.list(job.id)
    assert checkpoints.data
    assert checkpoints.data[0].metrics.valid_loss is not None
    listed = await keel.client.fine_tuning.jobs.list()
    assert [j.id for j in listed.data] == [job.id]
    version = keel.services.registry.get_model("default", "smollm2@2")
    assert version["tags"] == ["fine-tuned", "base:smollm2@1", f"job:{job.id}"]
    extra: dict[str, Any] = done.model_extra or {}
    assert extra["keel"]["lineage"]["base_model"] == "smollm2@1"
    assert extra["keel"]["lineage"]["training_file"] == uploaded.id
    assert await asyncio.to_thread(Path(extra["keel"]["lineage"]["gguf"]).is_file)
    with keel.services.database.session() as session:
        actions = set(session.scalars(select(AuditEvent.action)))
    assert {"fine_tuning_job.create", "model.create", "deployment.set"} <= actions


async def test_cancel_mid_training_stops_and_registers_nothing(keel: Keel) -> None:
    uploaded = await keel.client.files.create(
        file=("train.jsonl", task_file(60)), purpose="fine-tune"
    )
    job = await keel.client.fine_tuning.jobs.create(
        model="smollm2",
        training_file=uploaded.id,
        hyperparameters={"n_epochs": 5, "batch_size": 4},
        extra_body=TINY,
    )
    for _ in range(6000):
        events = await keel.client.fine_tuning.jobs.list_events(job.id, limit=5)
        if any(e.type == "metrics" for e in events.data):
            break
        await asyncio.sleep(0.05)
    cancelled = await keel.client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status in ("running", "cancelled")
    done = await wait_for(keel.client, job.id, ("succeeded", "failed", "cancelled"))
    assert done.status == "cancelled"
    assert done.fine_tuned_model is None
    assert [m["ref"] for m in keel.services.registry.list_models("default")] == [
        "remote-model@1",
        "smollm2@1",
    ]


def broken_line_file() -> bytes:
    good = task_file(12).decode().splitlines()
    good[4] = good[4][:-5]  # cut off the end of line 5
    return ("\n".join(good) + "\n").encode()


async def test_a_broken_line_is_refused_at_upload_naming_it(keel: Keel) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await keel.client.files.create(file=("t.jsonl", broken_line_file()), purpose="fine-tune")
    assert "line 5: not valid JSON" in caught.value.message


@pytest.mark.parametrize(
    ("model", "examples", "error", "says"),
    [
        ("smollm2", 3, openai.BadRequestError, "fine-tuning needs at least 10"),
        (
            "gpt-9",
            12,
            openai.NotFoundError,
            "unknown base model 'gpt-9' (known: remote-model@1, smollm2@1)",
        ),
        ("remote-model", 12, openai.BadRequestError, "remote-model@1 cannot be fine-tuned"),
    ],
)
async def test_bad_input_is_a_4xx_naming_the_cause_and_creates_nothing(
    keel: Keel, model: str, examples: int, error: type[Exception], says: str
) -> None:
    uploaded = await keel.client.files.create(
        file=("t.jsonl", task_file(examples)), purpose="fine-tune"
    )
    with pytest.raises(error) as caught:  # type: ignore[call-overload]
        await keel.client.fine_tuning.jobs.create(model=model, training_file=uploaded.id)
    assert says in caught.value.message  # type: ignore[attr-defined]
    assert (await keel.client.fine_tuning.jobs.list()).data == []


async def test_an_unknown_job_is_a_404_saying_how_to_list(keel: Keel) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await keel.client.fine_tuning.jobs.retrieve("ftjob_nope")
    assert "list them with GET /v1/fine_tuning/jobs" in caught.value.message
