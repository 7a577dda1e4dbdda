"""/api/datasets, /api/experiments, /api/comparisons, /api/scorers: evaluation's control
plane. Datasets are versioned (a write makes a version); experiments start one run (a job)
per subject; comparisons and gates read finished runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from keel.auth.keys import Principal
from keel.embeddings.base import Embedder
from keel.errors import InvalidRequest, NotFound
from keel.evals.datasets import NAME_PATTERN, Dataset, DatasetService, Item, Version
from keel.evals.experiments import ExperimentKind, ExperimentSpec, output_text, request_body
from keel.evals.items import ItemIn, parse_file, to_new_item
from keel.evals.junit import junit_xml
from keel.evals.scorers import catalog
from keel.evals.service import RUN_ID_PATTERN, EvalService, run_title
from keel.evals.summary import collect
from keel.jobs.model import Job
from keel.routing.table import Target
from keel.server.admin import evals_online
from keel.server.admin.jobs import job_view
from keel.server.admin.traces import _metadata, parse_time
from keel.server.admin.workflows import workflow_service
from keel.server.deps import ServicesDep, require
from keel.server.openai.files import check_body, job_system
from keel.server.openai.workflows import chat_input
from keel.server.services import Services
from keel.tracing.store import TraceFilter


def eval_service(services: Services) -> EvalService:
    """The app's evaluation service, built on first use; its job kind joins the executor."""
    found = services.extras.get("evals")
    if found is None:
        system = job_system(services)

        def embedder() -> Embedder | None:
            return next(iter(services.catalog.embedders), None)

        # The routing table is replaced on every change: read it at each use. Subjects may
        # name a route, a model (its newest version) or one version (name@N).
        def routes(project: str) -> list[str]:
            table = services.router.table
            return [*table.names(project), *(ref for (p, ref) in table.versions if p == project)]

        def target_of(project: str, ref: str) -> Target | None:
            table = services.router.table
            return table.versions.get((project, ref)) or table.static.get(ref)

        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None

        def wake() -> None:
            # start() runs in a worker thread, and the executor's wake sets an asyncio.Event
            # of the app's loop: set from another thread, it races the loop's own waiters.
            if loop is None:
                system.executor.wake()
            else:
                loop.call_soon_threadsafe(system.executor.wake)

        def kbs(project: str) -> list[str]:
            knowledge = services.extras.get("knowledge")
            return [] if knowledge is None else [b.name for b in knowledge.list_bases(project)]

        def workflows(project: str) -> list[str]:
            found = workflow_service(services).store.definitions(project, "workflow")
            return [d["name"] for d in found if not d["archived"]]

        kind = ExperimentKind(
            services.gateway, system.store, services.keys.principal_of, embedder, target_of,
            workflow=lambda *args: _run_workflow(services, *args),
        )  # fmt: skip
        system.register(kind)
        found = EvalService(
            DatasetService(services.database, services.tracing),
            system.store,
            routes,
            embedder,
            wake=wake,
            kbs=kbs,
            workflows=workflows,
        )
        services.extras["evals"] = found
    assert isinstance(found, EvalService)
    return found


async def _run_workflow(
    services: Services, principal: Principal, name: str, item: dict[str, Any], trace_id: str
) -> str:
    """An item as one run of a workflow, as `model: "workflow:NAME"` runs a chat: its input
    is the item's variables, or made from its last user message; its output the answer."""
    flows = workflow_service(services)
    workflow = await flows.compiled(principal.project_id, "workflow", name)
    value = item.get("variables")
    if value is None:
        value = chat_input("workflow", workflow.spec.input, item.get("messages"))
    result = await flows.run(principal, "workflow", name, value, wait=True, trace_id=trace_id)
    assert isinstance(result, dict)  # never streamed
    if result["status"] != "succeeded":
        raise InvalidRequest(
            f"workflow run {result['id']} ended {result['status']}",
            param="workflow",
            code=f"workflow_run_{result['status']}",
        )
    return output_text(result["output"])


@asynccontextmanager
async def _evals_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Register the experiment kind at start, so runs a stopped process left resume, and
    score live calls by the online rules in the background."""
    eval_service(app.state.services)
    online = evals_online.online_evaluator(app.state.services)
    online.start()
    try:
        yield
    finally:
        await online.stop()


router = APIRouter(tags=["evaluation"], lifespan=_evals_lifespan)
router.include_router(evals_online.router)

DatasetName = Annotated[str, Path(pattern=NAME_PATTERN, description="Dataset name")]
RunId = Annotated[str, Path(pattern=RUN_ID_PATTERN, description="Experiment run id")]


async def _run(function: Any, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(function, *args, **kwargs)


def _ts(value: Any) -> float | None:
    return value.timestamp() if value is not None else None


def version_view(v: Version) -> dict[str, Any]:
    return {"version": v.version, "items": v.items, "source": v.source, "note": v.note,
            "created_by": v.created_by, "created_at": _ts(v.created_at)}  # fmt: skip


def dataset_view(d: Dataset) -> dict[str, Any]:
    return {"id": d.id, "object": "dataset", "name": d.name, "description": d.description,
            "latest_version": d.latest_version, "created_at": _ts(d.created_at),
            "versions": [version_view(v) for v in d.versions]}  # fmt: skip


def item_view(i: Item) -> dict[str, Any]:
    return {"id": i.id, "input": i.input, "expected": i.expected, "context": i.context,
            "metadata": i.metadata, "source_trace_id": i.source_trace_id,
            "added_version": i.added_version}  # fmt: skip


def run_view(job: Job) -> dict[str, Any]:
    view = job_view(job)
    params = job.params
    return {
        **view,
        "object": "experiment.run",
        "experiment": params.get("experiment"),
        "dataset": params.get("dataset"),
        "dataset_version": params.get("dataset_version"),
        "subject": params.get("subject"),
        "title": run_title(job),
        "label": params.get("label"),
        "repeat": params.get("repeat"),
        "scorers": params.get("scorer_info"),
        "summary": job.result.get("summary"),
    }


# -- datasets ---------------------------------------------------------------------------


class DatasetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    description: str = Field("", max_length=2000)
    items: list[ItemIn] = Field(default_factory=list, max_length=100_000)


# An item id is a row id: positive and within a 63-bit integer (SQLite's and PostgreSQL's).
ItemId = Annotated[int, Field(ge=1, le=2**63 - 1)]


class ItemsAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[ItemIn] = Field(default_factory=list, max_length=100_000)
    remove: list[ItemId] = Field(default_factory=list, max_length=100_000)
    note: str = Field("", max_length=2000)


class FromTraces(BaseModel):
    """Which traces become items: the same filters as GET /api/traces, plus a score."""

    model_config = ConfigDict(extra="forbid")

    since: str | None = Field(None, max_length=64, description="ISO time or age: 1h, 7d")
    until: str | None = Field(None, max_length=64)
    route: str | None = Field(None, max_length=200, description="Model, route or version")
    prompt: str | None = Field(None, max_length=120, description="NAME or NAME@VERSION")
    status: Literal["ok", "error"] | None = "ok"
    cache: Literal["hit-exact", "hit-semantic", "miss"] | None = None
    user: str | None = Field(None, max_length=256)
    metadata: list[str] = Field(default_factory=list, max_length=16)
    q: str | None = Field(None, max_length=200, description="Text in the request or response")
    score_name: str | None = Field(None, max_length=100, description="A feedback score's name")
    min_score: float | None = None
    max_score: float | None = None
    limit: int = Field(1000, ge=1, le=10_000)
    expected: Literal["output", "none"] = Field(
        "output", description="Keep each trace's answer as the item's expected output"
    )
    note: str = Field("", max_length=2000)


@router.get("/datasets", summary="Datasets of your project")
async def list_datasets(
    services: ServicesDep, principal: Annotated[Principal, require("datasets:read")]
) -> dict[str, Any]:
    found = await _run(eval_service(services).datasets.list, principal.project_id)
    return {"object": "list", "data": [dataset_view(d) for d in found]}


@router.post("/datasets", summary="Create a dataset (with items: its version 1)", status_code=201)
async def create_dataset(
    services: ServicesDep,
    principal: Annotated[Principal, require("datasets:write")],
    body: DatasetCreate,
) -> dict[str, Any]:
    items = [to_new_item(i) for i in body.items]
    created = await _run(
        eval_service(services).datasets.create, principal.project_id, body.name,
        description=body.description, items=items, source="api", created_by=principal.key_id,
    )  # fmt: skip
    return dataset_view(created)


@router.get("/datasets/{name}", summary="A dataset and its versions")
async def get_dataset(
    services: ServicesDep, principal: Annotated[Principal, require("datasets:read")],
    name: DatasetName,
) -> dict[str, Any]:  # fmt: skip
    return dataset_view(await _run(eval_service(services).datasets.get, principal.project_id, name))


@router.delete("/datasets/{name}", summary="Delete a dataset, every version and item")
async def delete_dataset(
    services: ServicesDep, principal: Annotated[Principal, require("datasets:write")],
    name: DatasetName,
) -> dict[str, Any]:  # fmt: skip
    await _run(eval_service(services).datasets.delete, principal.project_id, name,
               deleted_by=principal.key_id)  # fmt: skip
    return {"name": name, "deleted": True}


@router.get("/datasets/{name}/items", summary="A version's items (latest by default)")
async def list_items(
    services: ServicesDep,
    principal: Annotated[Principal, require("datasets:read")],
    name: DatasetName,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    after: Annotated[int, Query(ge=0, description="Item id to page after")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    chosen, items = await _run(
        eval_service(services).datasets.items, principal.project_id, name, version,
        limit=limit + 1, after=after,
    )  # fmt: skip
    return {"object": "list", "version": chosen, "data": [item_view(i) for i in items[:limit]],
            "has_more": len(items) > limit}  # fmt: skip


@router.post("/datasets/{name}/items", summary="Add or remove items: a new version")
async def add_items(
    services: ServicesDep,
    principal: Annotated[Principal, require("datasets:write")],
    name: DatasetName,
    body: ItemsAdd,
) -> dict[str, Any]:
    version = await _run(
        eval_service(services).datasets.add_items, principal.project_id, name,
        [to_new_item(i) for i in body.items], remove=body.remove, source="api",
        note=body.note, created_by=principal.key_id,
    )  # fmt: skip
    return version_view(version)


@router.post(
    "/datasets/{name}/upload",
    summary="Items from a JSONL or CSV file (the raw file as the body): a new version; the "
    "dataset is created when new",
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "JSONL (one item per line) or CSV (a header, then one row per item)",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def upload_items(
    services: ServicesDep,
    principal: Annotated[Principal, require("datasets:write")],
    name: DatasetName,
    request: Request,
    filename: Annotated[
        str, Query(max_length=200, description="The file's name; .csv reads CSV, else JSONL")
    ] = "items.jsonl",
) -> dict[str, Any]:
    content = await request.body()  # bounded by the server's max_body_bytes
    items = await _run(parse_file, filename, content)  # a bad line: 400, nothing stored
    service = eval_service(services).datasets
    project = principal.project_id

    def store() -> Version:
        try:
            return service.add_items(project, name, items, source=f"file:{filename}"[:200],
                                     created_by=principal.key_id)  # fmt: skip
        except NotFound as error:
            if error.code != "dataset_not_found":
                raise
        # A new dataset: created with this file as its version 1.
        created = service.create(project, name, items=items, source=f"file:{filename}"[:200],
                                 created_by=principal.key_id)  # fmt: skip
        return created.versions[0]

    return version_view(await _run(store))


@router.post("/datasets/{name}/from-traces", summary="Items from traces matching a filter, in "
             "bulk: one new version (the dataset is created when new)")  # fmt: skip
async def from_traces(
    services: ServicesDep,
    principal: Annotated[Principal, require("datasets:write")],
    name: DatasetName,
    body: FromTraces,
) -> dict[str, Any]:
    now = time.time_ns() // 1000
    filters = TraceFilter(
        since_us=parse_time(body.since, "since", now),
        until_us=parse_time(body.until, "until", now),
        model=body.route, prompt=body.prompt, status=body.status, cache=body.cache,
        user=body.user, metadata=_metadata(body.metadata), text=body.q or None,
    )  # fmt: skip
    score = None
    if body.score_name is not None:
        score = (body.score_name, body.min_score, body.max_score)
    elif body.min_score is not None or body.max_score is not None:
        raise InvalidRequest("min_score/max_score need score_name: which score to read",
                             param="score_name")  # fmt: skip
    version = await _run(
        eval_service(services).datasets.from_traces, principal.project_id, name, filters,
        limit=body.limit, score=score, expected_from_output=body.expected == "output",
        created_by=principal.key_id, note=body.note,
    )  # fmt: skip
    return version_view(version)


# -- scorers, experiments, comparisons ------------------------------------------------------


@router.get("/scorers", summary="Scorer types with their range, direction and default threshold")
async def list_scorers(
    principal: Annotated[Principal, require("experiments:read")],
) -> dict[str, Any]:
    return {"object": "list", "data": catalog()}


@router.post("/experiments", summary="Run a dataset against subjects: one run (a job) each",
             status_code=201)  # fmt: skip
async def start_experiment(
    services: ServicesDep,
    principal: Annotated[Principal, require("experiments:write")],
    body: ExperimentSpec,
) -> dict[str, Any]:
    for index, subject in enumerate(body.subjects):  # the same wire check a live call gets
        if subject.workflow is not None:
            continue  # a run, not a call: its input is checked against its schema per item
        sample = request_body(subject.model_dump(exclude_none=True), {"messages": [
            {"role": "user", "content": "x"}]})  # fmt: skip
        problem = check_body("chat/completions", sample)
        if problem is not None:
            raise InvalidRequest(f"subjects[{index}]: {problem}", param=f"subjects[{index}]",
                                 code="invalid_subject")  # fmt: skip
    runs = await _run(eval_service(services).start, principal, body)
    await _run(services.audit.add, principal, "experiment.start", "experiment", body.name,
               after={"dataset": body.dataset, "runs": [job.id for job in runs]})  # fmt: skip
    return {"object": "list", "data": [run_view(job) for job in runs]}


@router.get("/experiments", summary="Experiment runs, newest first")
async def list_runs(
    services: ServicesDep,
    principal: Annotated[Principal, require("experiments:read")],
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    jobs, more = await _run(
        eval_service(services).page, principal.project_id, after=after, limit=limit
    )
    return {"object": "list", "data": [run_view(j) for j in jobs], "has_more": more}


@router.get("/experiments/{run_id}", summary="A run: progress, scorers and its summary")
async def get_run(
    services: ServicesDep, principal: Annotated[Principal, require("experiments:read")],
    run_id: RunId,
) -> dict[str, Any]:  # fmt: skip
    return run_view(await _run(eval_service(services).get, principal.project_id, run_id))


@router.get("/experiments/{run_id}/items", summary="A run's results per dataset item")
async def run_items(
    services: ServicesDep, principal: Annotated[Principal, require("experiments:read")],
    run_id: RunId,
) -> dict[str, Any]:  # fmt: skip
    service = eval_service(services)
    job = await _run(service.get, principal.project_id, run_id)
    items = await _run(service.jobs.items, job.id, ["done", "failed"])
    data = []
    for item_id, scores in sorted(collect(items).items()):
        metrics = list(scores.values)
        data.append({
            "item_id": item_id, "outputs": scores.outputs, "trace_ids": scores.trace_ids,
            "errors": scores.errors, "latency_ms": scores.latencies,
            "scores": {m: scores.value(m) for m in ["pass_rate", *metrics]},
            "passed": scores.all_passed() == 1.0,
        })  # fmt: skip
    return {"object": "list", "run": run_id, "data": data}


class CompareBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    runs: list[str] = Field(min_length=2, max_length=10, description="Baseline first: run ids "
                            "or labels")  # fmt: skip
    confidence: float = 0.95


@router.post("/comparisons", summary="Runs side by side: paired differences and per-item diffs")
async def compare_runs(
    services: ServicesDep,
    principal: Annotated[Principal, require("experiments:read")],
    body: CompareBody,
) -> dict[str, Any]:
    return await _run(  # type: ignore[no-any-return]
        eval_service(services).compare, principal.project_id, body.runs, body.confidence
    )


class GatesBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gates: list[str] = Field(min_length=1, max_length=50, description="accuracy>=0.8, "
                             "delta(accuracy)>=-0.02, pass_rate>=0.9")  # fmt: skip
    baseline: str | None = Field(None, max_length=120, description="Run id or label")
    confidence: float = 0.95


@router.post("/experiments/{run_id}/gates", summary="Check CI gates on a finished run; with "
             "JUnit XML")  # fmt: skip
async def check_gates(
    services: ServicesDep,
    principal: Annotated[Principal, require("experiments:read")],
    run_id: RunId,
    body: GatesBody,
) -> dict[str, Any]:
    service = eval_service(services)
    job = await _run(service.get, principal.project_id, run_id)
    if not job.final:
        raise InvalidRequest(f"run {run_id} is {job.state}; check gates once it has finished",
                             param="run_id", code="run_not_finished")  # fmt: skip
    results = await _run(
        service.gates, principal.project_id, run_id, body.gates, body.baseline, body.confidence
    )
    run = await _run(service.run, job)
    items = [
        {"item_id": i, "passed": s.all_passed() == 1.0,
         "detail": "; ".join(s.errors) or ", ".join(
             f"{m}={s.value(m)}" for m in s.values if not all(s.passed.get(m, [True])))}
        for i, s in sorted(run.items.items())
    ]  # fmt: skip
    xml = junit_xml(str(job.params.get("experiment", run_id)), results,
                    [{"id": run_id, "title": run.title, "items": items}])  # fmt: skip
    return {
        "run": run_id,
        "passed": all(r.passed for r in results),
        "gates": [r.as_dict() for r in results],
        "junit": xml,
    }
