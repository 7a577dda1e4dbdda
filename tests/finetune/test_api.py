"""Fine-tuning end to end against the real bundled model: the whole loop (traces → dataset →
job → version → evaluation → canary → rollback, audited) through the official openai SDK and
the control plane; cancel mid-training; bad input refused with a 4xx naming the cause before
anything is stored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from keel.cli.finetune import canary_split
from keel.finetune.executor import TrainingOptions
from keel.jobs.executor import ExecutorOptions
from keel.registry.specs import DeploymentSpec, ModelVersionSpec, ProviderSpec, RouteSpec
from keel.server.app import create_app
from keel.server.openai.files import job_system
from keel.server.openai.fine_tuning import fine_tune_system
from keel.server.services import Services, stop_services
from tests.finetune.conftest import add_bundled_base, task_examples, task_file
from tests.support.app import build_services
from tests.support.upstream import FakeUpstream

TINY = {"lora": {"max_seq_len": 64, "eval_every": 1, "threads": 1}}


@dataclass
class Keel:
    client: openai.AsyncOpenAI
    services: Services
    http: httpx.AsyncClient  # the /api control plane, with the same key


@pytest.fixture
async def keel(
    tmp_path: Path, upstream: FakeUpstream, base_cache: Path, scanners: Any
) -> AsyncIterator[Keel]:
    # One llama.cpp thread a server: its threads spin while they wait for each other, which
    # on a shared 2-core machine costs seconds a token.
    services, key = build_services(tmp_path, upstream.base_url, local_model_threads=1)
    registry = services.registry
    add_bundled_base(registry)
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
    jobs = job_system(services)  # runs the evaluation's experiments
    jobs.executor.options = ExecutorOptions(heartbeat_seconds=0.2, poll_seconds=0.1)
    await jobs.start()
    system = fine_tune_system(services)
    system.executor.options = TrainingOptions(heartbeat_seconds=0.2, poll_seconds=0.1)
    system.runner.base_cache = base_cache
    system.runner.scanners = lambda: scanners
    await system.start()
    services.sync.attach(services.events)  # registry changes reach routing, as in keel serve
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://keel/v1") as http,
        httpx.AsyncClient(transport=transport, base_url="http://keel", headers=headers) as api,
    ):
        client = openai.AsyncOpenAI(api_key=key, base_url="http://keel/v1", http_client=http)
        yield Keel(client, services, api)
    await system.stop()
    await jobs.stop()
    await stop_services(services)


async def wait_for(client: openai.AsyncOpenAI, job_id: str, states: tuple[str, ...]) -> Any:
    # A bound, not a timing: model load, scan, training and the merge share 2 busy cores.
    for _ in range(36000):
        job = await client.fine_tuning.jobs.retrieve(job_id)
        if job.status in states:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {states}: {job.status} {job.error}")


async def _ready(services: Services, ref: str) -> None:
    """Wait for the local replica of `ref` (a bound, not a timing: llama.cpp starts on 2
    busy cores)."""
    for _ in range(6000):
        check = services.deployments.readiness().get(f"deployment:{ref}", {})
        if check.get("ready"):
            return
        assert check.get("state") != "crashlooping", check
        await asyncio.sleep(0.05)
    raise AssertionError(f"{ref} never became ready")


def task_file_of(examples: list[Any]) -> bytes:
    return b"".join(orjson.dumps({"messages": list(e.messages)}) + b"\n" for e in examples)


async def _finished(http: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    for _ in range(12000):  # a bound, not a timing: llama.cpp answers on 2 busy cores
        run = (await http.get(f"/api/experiments/{run_id}")).json()
        if run["state"] in ("succeeded", "failed", "cancelled"):
            return dict(run)
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish")


async def test_the_whole_loop_from_traces_to_a_canary_and_back(keel: Keel) -> None:
    """Traces through the gateway → a dataset from them → a job on it (through the SDK) →
    a new model version served by llama.cpp → compared with its base on held-out data →
    10 % canary → rollback, each change in the audit log.

    The comparison is the job's own evaluation: an experiment of both versions on the
    held-out file. The tiny job (two steps) does not learn the task, so its gate refuses the
    canary, as it must; the canary is then set by hand with the route command a person would
    use."""
    services, client = keel.services, keel.client
    project, actor = "default", "test"
    services.registry.put_deployment(project, DeploymentSpec(model="smollm2@1"), actor)
    services.registry.put_route(
        project, RouteSpec(name="support", targets={"smollm2@1": 100}), actor
    )
    await asyncio.gather(*await services.sync.refresh())
    await _ready(services, "smollm2@1")
    services.tracing.start_writer()
    examples = task_examples(15)
    traffic, held_out = examples[:12], examples[12:]
    for example in traffic:  # production traffic on the route, recorded with its content
        await client.chat.completions.create(
            model="support",
            messages=list(example.messages[:-1]),  # type: ignore[arg-type]
            temperature=0,
            max_tokens=8,
        )
    http = keel.http
    for _ in range(600):  # the trace writer flushes in batches
        found = (await http.get("/api/traces", params={"limit": 50})).json()["data"]
        if len(found) >= len(traffic):
            break
        await asyncio.sleep(0.05)
    made = await http.post(
        "/api/datasets/support-traces/from-traces", json={"route": "support", "limit": 50}
    )
    assert made.status_code == 200, made.text
    assert made.json()["items"] == len(traffic)

    held_file = await client.files.create(
        file=("held.jsonl", task_file_of(held_out)), purpose="fine-tune"
    )
    job = await client.fine_tuning.jobs.create(
        model="smollm2",
        training_file="dataset:support-traces",
        hyperparameters={"n_epochs": 1, "batch_size": 8},
        extra_body={**TINY, "evaluation": {"file": held_file.id, "max_tokens": 24}},
    )
    assert job.status in ("validating_files", "queued", "running")
    assert job.model == "smollm2@1"
    assert job.training_file == "dataset:support-traces@1"  # pinned to the version read
    done = await wait_for(client, job.id, ("succeeded", "failed", "cancelled"))
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == "smollm2@2"
    assert done.trained_tokens
    events = await client.fine_tuning.jobs.list_events(job.id, limit=100)
    messages = [e.message for e in events.data]
    assert messages[-1] == (
        "created: 12 training conversations from dataset:support-traces@1, base smollm2@1"
    )
    assert any(m.startswith("scanned 12 examples") for m in messages)
    assert "registered smollm2@2" in messages
    checkpoints = await client.fine_tuning.jobs.checkpoints.list(job.id)
    assert checkpoints.data
    assert checkpoints.data[0].metrics.valid_loss is not None
    assert [j.id for j in (await client.fine_tuning.jobs.list()).data] == [job.id]
    version = services.registry.get_model(project, "smollm2@2")
    assert version["tags"] == ["fine-tuned", "base:smollm2@1", f"job:{job.id}"]
    lineage = (done.model_extra or {})["keel"]["lineage"]
    assert lineage["base_model"] == "smollm2@1"
    assert lineage["training_file"] == "dataset:support-traces@1"

    # The job's evaluation: one experiment, base and tuned on the held-out conversations,
    # answered by llama.cpp through the gateway and judged by the evaluation module's gate.
    evaluation = (done.model_extra or {})["keel"]["result"]["evaluation"]
    assert evaluation["dataset"] == f"finetune-{job.id}@1"
    assert evaluation["items"] == len(held_out)
    assert any(m.startswith("evaluation started: ") for m in messages)
    runs = evaluation["runs"]
    for run_id in (runs["base"], runs["tuned"]):
        run = await _finished(http, run_id)
        assert run["state"] == "succeeded", run
        assert run["progress"]["done"] == len(held_out)
    assert (await http.get(f"/api/experiments/{runs['tuned']}")).json()["subject"]["model"] == (
        "smollm2@2"
    )
    checked = await http.post(
        f"/api/experiments/{runs['tuned']}/gates",
        json={"gates": [evaluation["gate"]], "baseline": runs["base"]},
    )
    assert checked.status_code == 200, checked.text
    (gate,) = checked.json()["gates"]
    assert gate["gate"] == "delta(json_equal.pass_rate)>=0.1"
    assert not checked.json()["passed"]  # two steps on 12 answers: no gain it can vouch for

    route = (await http.get("/api/routes/support")).json()
    split = canary_split(route["targets"], "smollm2@2", 10)
    assert split == {"smollm2@1": 90, "smollm2@2": 10}
    assert (await http.post("/api/routes/support/split", json={"targets": split})).is_success
    assert (await http.get("/api/routes/support")).json()["targets"] == split
    assert (await http.post("/api/routes/support/rollback")).is_success
    assert (await http.get("/api/routes/support")).json()["targets"] == {"smollm2@1": 100}

    log = (await http.get("/api/audit", params={"limit": 1000})).json()["data"]
    steps = [(e["action"], e["target_id"]) for e in reversed(log)]
    expected = [
        ("dataset.from_traces", "support-traces"),
        ("fine_tuning_job.create", job.id),
        ("model.create", "smollm2@2"),
        ("deployment.set", "smollm2@2"),
        ("fine_tuning_job.evaluate", job.id),
        ("route.split", "support"),
        ("route.rollback", "support"),
    ]
    assert [s for s in steps if s in expected] == expected


async def test_cancel_mid_training_stops_and_registers_nothing(keel: Keel) -> None:
    uploaded = await keel.client.files.create(
        file=("train.jsonl", task_file(20)), purpose="fine-tune"
    )
    job = await keel.client.fine_tuning.jobs.create(  # 25 steps: cancelled after the first
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


async def test_a_dataset_source_is_checked_item_by_item_before_a_job_exists(keel: Keel) -> None:
    items = [{"input": f"review {i}", "expected": '{"sentiment": "positive"}'} for i in range(11)]
    items.append({"input": "review without an answer"})
    made = await keel.http.post("/api/datasets", json={"name": "reviews", "items": items})
    assert made.status_code in (200, 201), made.text
    with pytest.raises(openai.BadRequestError) as caught:
        await keel.client.fine_tuning.jobs.create(model="smollm2", training_file="dataset:reviews")
    assert "dataset:reviews@1 item" in caught.value.message
    assert "has no expected answer to learn" in caught.value.message
    with pytest.raises(openai.NotFoundError) as missing:
        await keel.client.fine_tuning.jobs.create(model="smollm2", training_file="dataset:nope")
    assert "no dataset 'nope'" in missing.value.message
    assert (await keel.client.fine_tuning.jobs.list()).data == []


@pytest.mark.parametrize(
    ("evaluation", "param", "says"),
    [
        ({"gate": "accuracy is high"}, "evaluation.gate", "cannot read gate 'accuracy is high'"),
        ({"gate": "delta(exact.pass_rate)>=0.1"}, "evaluation.gate",
         "'exact.pass_rate' is not a metric of the scorers (json_equal)"),
        ({"scorers": [{"type": "vibes"}]}, "evaluation.scorers[0].type", "vibes"),
        ({"file": "file-nope"}, "evaluation.file", "no file 'file-nope'"),
        ({"file": "empty"}, "evaluation.file", "holds no conversations"),
    ],
)  # fmt: skip
async def test_a_bad_evaluation_is_a_400_naming_its_field_before_a_job_exists(
    keel: Keel, evaluation: dict[str, Any], param: str, says: str
) -> None:
    uploaded = await keel.client.files.create(file=("t.jsonl", task_file(12)), purpose="fine-tune")
    if evaluation.get("file") == "empty":
        empty = await keel.client.files.create(file=("e.jsonl", b"\n"), purpose="fine-tune")
        evaluation = {"file": empty.id}
    with pytest.raises(openai.APIStatusError) as caught:
        await keel.client.fine_tuning.jobs.create(
            model="smollm2", training_file=uploaded.id, extra_body={"evaluation": evaluation}
        )
    assert caught.value.status_code in (400, 404)
    assert caught.value.body["param"] == param  # type: ignore[index]
    assert says in caught.value.message
    assert (await keel.client.fine_tuning.jobs.list()).data == []
