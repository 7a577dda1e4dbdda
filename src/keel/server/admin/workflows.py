"""/api/workflows and /api/workflow-runs: workflow and agent definitions (versioned, checked
whole before they are stored), runs (sync or async), resume and cancel.

Reading takes `workflows:read`, defining `workflows:write`, running `inference` (a run
makes model calls as its caller, like /v1). A run with `mode: job` is driven by the job
system (one item per item of its map), so its progress and cancel are the job's too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from keel.auth.keys import Principal
from keel.errors import InvalidRequest
from keel.server.deps import ServicesDep, require
from keel.server.openai.files import job_system
from keel.server.openai.protocol import ErrorResponse
from keel.server.responses import json_response
from keel.server.services import Services
from keel.workflows.definitions import invalid, parse
from keel.workflows.jobs import WorkflowJobs
from keel.workflows.service import Streamed, Workflows, summary


@asynccontextmanager
async def _workflows_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Register the workflow job kind at start, so job-driven runs a stopped process left
    go on here."""
    workflow_jobs(app.state.services)
    yield


router = APIRouter(tags=["workflows"], lifespan=_workflows_lifespan)

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid spec or input (the message says where)"},
    404: {"model": ErrorResponse, "description": "No such workflow, agent or run here"},
    422: {"model": ErrorResponse, "description": "The run failed at a step (resume it)"},
}
Name = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]
RunId = Annotated[str, Path(pattern=r"^wfr_[0-9a-f]{24}$", description="Run id (wfr_…).")]
KindQuery = Annotated[Literal["workflow", "agent"], Query(description="workflow or agent")]


def workflow_service(services: ServicesDep) -> Workflows:
    """The process's workflow service (started with the server; made here for test apps)."""
    found = services.extras.get("workflows")
    if found is None:
        found = build_workflows(services)
        services.extras["workflows"] = found
    assert isinstance(found, Workflows)
    return found


def build_workflows(services: Services) -> Workflows:
    settings = services.settings
    recorder = services.tracing.recorder if services.tracing.enabled else None
    return Workflows(
        services.database,
        services.gateway,
        principal_of=services.keys.principal_of,
        trace_sink=recorder.submit if recorder is not None else None,
        knowledge=lambda: services.extras.get("knowledge"),
        guard=services.guard,
        events=services.events,
        max_age_s=(settings.workflow_retention_days * 86_400) or None,
        max_runs=settings.workflow_retention_max_runs or None,
        trace_content=settings.trace_content,
    )


WorkflowsDep = Annotated[Workflows, Depends(workflow_service)]


def workflow_jobs(services: Services) -> WorkflowJobs:
    """The `workflow.run` job kind, registered with the process's job system once."""
    found = services.extras.get("workflow_jobs")
    if found is None:
        system = job_system(services)
        found = WorkflowJobs(workflow_service(services), system.store, system.executor.wake)
        system.register(found)
        services.extras["workflow_jobs"] = found
    assert isinstance(found, WorkflowJobs)
    return found


class DefineBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["workflow", "agent"] = "workflow"
    spec: dict[str, Any] = Field(description="The workflow or agent, as written in YAML.")
    message: str = Field("", max_length=2000)
    also: dict[Literal["workflow", "agent"], list[str]] = Field(
        default_factory=dict, description="Names applied alongside: {workflow: [...]}."
    )


class CheckBody(DefineBody):
    pass


class RunBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: Any = Field(default_factory=dict)
    mode: Literal["sync", "async", "job"] = Field(
        "sync",
        description="sync: answer at the end; async: 202 at once; job: 202 at once, the run "
        "driven by a job with one item per item of its first map (its job_id: progress, "
        "cancel).",
    )


class ResumeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["sync", "async"] = "async"


@router.get("/workflows", summary="List workflows or agents")
async def list_definitions(
    flows: WorkflowsDep,
    principal: Annotated[Principal, require("workflows:read")],
    kind: KindQuery = "workflow",
) -> Response:
    data = await asyncio.to_thread(flows.store.definitions, principal.project_id, kind)
    return json_response({"object": "list", "data": data})


@router.post(
    "/workflows", summary="Store a new version (unless it holds no change)", responses=_ERRORS
)
async def define(
    body: DefineBody,
    flows: WorkflowsDep,
    principal: Annotated[Principal, require("workflows:write")],
) -> Response:
    also: dict[str, set[str]] = {k: set(v) for k, v in body.also.items()}
    result = await asyncio.to_thread(
        flows.put, principal.project_id, body.kind, body.spec, body.message, also
    )
    return json_response(result, status=201 if result["created"] else 200)


@router.post(
    "/workflows/check", summary="Check a spec against this server, store nothing", responses=_ERRORS
)
async def check(
    body: CheckBody,
    flows: WorkflowsDep,
    principal: Annotated[Principal, require("workflows:read")],
) -> Response:
    spec = parse(body.kind, body.spec)
    also: dict[str, set[str]] = {k: set(v) for k, v in body.also.items()}
    issues = await asyncio.to_thread(
        flows.definitions.check, principal.project_id, body.kind, spec, also
    )
    if issues:
        raise invalid(issues, f"{body.kind} {spec.name!r}")
    return json_response({"name": spec.name, "ok": True, "content_hash": spec.content_hash()})


@router.get("/workflows/{name}", summary="A workflow or agent with its versions", responses=_ERRORS)
async def show(
    name: Name,
    flows: WorkflowsDep,
    principal: Annotated[Principal, require("workflows:read")],
    kind: KindQuery = "workflow",
) -> Response:
    await asyncio.to_thread(flows.definitions.latest, principal.project_id, kind, name)
    versions = await asyncio.to_thread(flows.store.versions, principal.project_id, kind, name)
    return json_response(
        {"name": name, "kind": kind, "latest_version": versions[0]["version"], "versions": versions}
    )


@router.delete("/workflows/{name}", summary="Archive a workflow or agent", responses=_ERRORS)
async def archive(
    name: Name,
    flows: WorkflowsDep,
    principal: Annotated[Principal, require("workflows:write")],
    kind: KindQuery = "workflow",
) -> Response:
    await asyncio.to_thread(flows.definitions.latest, principal.project_id, kind, name)
    await asyncio.to_thread(flows.store.archive, principal.project_id, kind, name)
    flows.definitions.changed(principal.project_id, name)
    return json_response({"name": name, "kind": kind, "archived": True})


@router.post(
    "/workflows/{name}/runs",
    summary="Run a workflow or agent (sync, async, or as a job)",
    responses=_ERRORS,
)
async def start_run(
    name: Name,
    body: RunBody,
    flows: WorkflowsDep,
    services: ServicesDep,
    principal: Annotated[Principal, require("inference")],
    kind: KindQuery = "workflow",
) -> Response:
    if body.mode == "job":
        if kind != "workflow":
            raise InvalidRequest("an agent runs sync or async, not as a job", param="mode")
        driven = await workflow_jobs(services).submit(principal, name, body.input)
        return json_response(driven, status=202)
    run = await flows.run(principal, kind, name, body.input, wait=body.mode == "sync")
    assert not isinstance(run, Streamed)
    return json_response(run, status=200 if body.mode == "sync" else 202)


@router.get("/workflows/{name}/runs", summary="A workflow's runs, newest first")
async def list_runs(
    name: Name,
    flows: WorkflowsDep,
    principal: Annotated[Principal, require("workflows:read")],
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    runs = await asyncio.to_thread(flows.store.runs, principal.project_id, name, limit, before)
    return json_response({"object": "list", "data": [summary(r) for r in runs]})


@router.get("/workflow-runs", summary="Every run of the project, newest first")
async def all_runs(
    flows: WorkflowsDep,
    principal: Annotated[Principal, require("workflows:read")],
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    runs = await asyncio.to_thread(flows.store.runs, principal.project_id, None, limit)
    return json_response({"object": "list", "data": [summary(r) for r in runs]})


@router.get(
    "/workflow-runs/{run_id}", summary="A run with its steps' checkpoints", responses=_ERRORS
)
async def get_run(
    run_id: RunId,
    flows: WorkflowsDep,
    principal: Annotated[Principal, require("workflows:read")],
) -> Response:
    return json_response(await flows.get(principal.project_id, run_id))


@router.post(
    "/workflow-runs/{run_id}/resume",
    summary="Resume a failed or cancelled run from its first incomplete step",
    responses=_ERRORS,
)
async def resume_run(
    run_id: RunId,
    flows: WorkflowsDep,
    principal: Annotated[Principal, require("inference")],
    body: ResumeBody | None = None,
) -> Response:
    wait = body is not None and body.mode == "sync"
    run = await flows.resume(principal, run_id, wait=wait)
    return json_response(run, status=200 if wait else 202)


@router.post(
    "/workflow-runs/{run_id}/cancel", summary="Cancel a run between two steps", responses=_ERRORS
)
async def cancel_run(
    run_id: RunId,
    flows: WorkflowsDep,
    principal: Annotated[Principal, require("inference")],
) -> Response:
    return json_response(await flows.cancel(principal, run_id), status=202)
