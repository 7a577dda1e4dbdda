"""/v1/fine_tuning/jobs: LoRA fine-tuning jobs in the OpenAI API's shape (the SDK's
`client.fine_tuning.jobs`), each ending as a new model version in the registry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, FastAPI, Query
from fastapi.responses import Response

from keel.auth.keys import Principal
from keel.evals.datasets import DatasetService
from keel.finetune.evaluate import Evaluator
from keel.finetune.ray_train import RayTraining
from keel.finetune.service import JobRequest, job_object
from keel.finetune.system import FineTuneSystem
from keel.server.admin.evals import eval_service
from keel.server.deps import ServicesDep, require
from keel.server.responses import json_response
from keel.server.services import Services

T = TypeVar("T")
Writer = Annotated[Principal, require("models:write")]
Reader = Annotated[Principal, require("models:read")]


def fine_tune_system(services: Services) -> FineTuneSystem:
    """The app's fine-tuning system, built on first use."""
    system = services.extras.get("finetune")
    if system is None:
        work_root = services.settings.data_dir / "finetune"
        datasets = DatasetService(services.database, services.tracing)
        system = FineTuneSystem(services.database, services.registry, work_root, datasets=datasets)
        if services.settings.ray_address:  # train on the Ray cluster (ray_train.py)
            system.runner.trainer = RayTraining(services.settings.ray_address)
        system.runner.evaluator = _evaluator(services, datasets)
        services.extras["finetune"] = system
    assert isinstance(system, FineTuneSystem)
    return system


def _evaluator(services: Services, datasets: DatasetService) -> Evaluator | None:
    """What a job needs to start its experiment, from the training thread: the key and the
    replica's readiness are read on the app's loop, where they live."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # built outside the app (a script): jobs end without an evaluation
        return None

    def on_loop(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        return asyncio.run_coroutine_threadsafe(make(), loop).result(timeout=60)

    async def readiness(ref: str) -> dict[str, Any]:
        return dict(services.deployments.readiness().get(f"deployment:{ref}", {}))

    return Evaluator(
        datasets,
        eval_service(services),  # built here, on the loop its runs' wake-ups go through
        lambda key_id: on_loop(lambda: services.keys.principal_of(key_id)),
        lambda ref: on_loop(lambda: readiness(ref)),
    )


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start training with the app (a job a stopped process left resumes), stop it first."""
    system = fine_tune_system(app.state.services)
    # A process told not to run jobs (an API-only replica) still serves these routes.
    if getattr(app.state.services.settings, "run_jobs", True):
        await system.start()
    try:
        yield
    finally:
        await system.stop()


router = APIRouter(prefix="/v1/fine_tuning", tags=["openai"], lifespan=_lifespan)


def _page(data: list[dict[str, Any]], more: bool) -> Response:
    return json_response({"object": "list", "data": data, "has_more": more})


@router.post("/jobs", summary="Create a fine-tuning job (checked in full before it is stored)")
async def create_job(body: JobRequest, services: ServicesDep, principal: Writer) -> Response:
    system = fine_tune_system(services)
    job = await asyncio.to_thread(system.service.create, principal, body)
    system.executor.wake()
    return json_response(job_object(job, None))


@router.get("/jobs", summary="List fine-tuning jobs, newest first")
async def list_jobs(
    services: ServicesDep,
    principal: Reader,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Response:
    service = fine_tune_system(services).service
    pairs, more = await asyncio.to_thread(service.page, principal.project_id, after, limit)
    return _page([job_object(job, run) for job, run in pairs], more)


@router.get("/jobs/{fine_tuning_job_id}", summary="A fine-tuning job")
async def get_job(services: ServicesDep, principal: Reader, fine_tuning_job_id: str) -> Response:
    service = fine_tune_system(services).service
    job, run = await asyncio.to_thread(service.job, principal.project_id, fine_tuning_job_id)
    return json_response(job_object(job, run))


@router.get("/jobs/{fine_tuning_job_id}/events", summary="A job's events, newest first")
async def list_events(
    services: ServicesDep,
    principal: Reader,
    fine_tuning_job_id: str,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> Response:
    service = fine_tune_system(services).service
    data, more = await asyncio.to_thread(
        service.events, principal.project_id, fine_tuning_job_id, after, limit
    )
    return _page(data, more)


@router.get(
    "/jobs/{fine_tuning_job_id}/checkpoints",
    summary="A job's checkpoints (step, training and validation loss), newest first",
)
async def list_checkpoints(
    services: ServicesDep,
    principal: Reader,
    fine_tuning_job_id: str,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> Response:
    system = fine_tune_system(services)
    _, run = await asyncio.to_thread(system.service.job, principal.project_id, fine_tuning_job_id)
    cursor = after.removeprefix("ftckpt_") if after else None
    rows = await asyncio.to_thread(
        system.service.runs.checkpoints,
        fine_tuning_job_id,
        after=int(cursor) if cursor and cursor.isdigit() else None,
        limit=limit + 1,
    )
    model = run.model_ref if run else None
    data = [c.as_wire(model) for c in rows[:limit]]
    return json_response(
        {
            "object": "list",
            "data": data,
            "has_more": len(rows) > limit,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


@router.post(
    "/jobs/{fine_tuning_job_id}/cancel", summary="Cancel a job: training stops at its next step"
)
async def cancel_job(services: ServicesDep, principal: Writer, fine_tuning_job_id: str) -> Response:
    system = fine_tune_system(services)
    job, run = await asyncio.to_thread(system.service.cancel, principal, fine_tuning_job_id)
    system.executor.cancelled(fine_tuning_job_id)
    return json_response(job_object(job, run))
