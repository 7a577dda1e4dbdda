"""Workflows in the console: definitions with their step graph, runs, one run's step
timeline with inputs and outputs, and buttons to resume a failed run or cancel one."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path
from fastapi.responses import Response

from keel.errors import KeelError
from keel.server.admin.workflows import workflow_service
from keel.ui.web import Console, UiError, UiRoute, db, page, redirect, ui_require
from keel.workflows.graph import svg
from keel.workflows.spec import WorkflowSpec

router = APIRouter(route_class=UiRoute)

Name = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]
RunId = Annotated[str, Path(pattern=r"^wfr_[0-9a-f]{24}$")]


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()[:4000]


@router.get("/workflows")
async def workflows(c: Annotated[Console, ui_require("workflows:read")]) -> Response:
    flows = workflow_service(c.services)
    project = c.principal.project_id
    defined = await db(flows.store.definitions, project, "workflow")
    agents = await db(flows.store.definitions, project, "agent")
    runs = await db(flows.store.runs, project, None, 50)
    return page(c.request, "workflows.html", console=c, workflows=defined, agents=agents, runs=runs)


@router.get("/workflows/{name}")
async def workflow(c: Annotated[Console, ui_require("workflows:read")], name: Name) -> Response:
    flows = workflow_service(c.services)
    project = c.principal.project_id
    versions = await db(flows.store.versions, project, "workflow", name)
    if not versions:
        raise UiError(404, f"no workflow '{name}' in this project")
    spec = WorkflowSpec.model_validate(versions[0]["spec"])
    runs = await db(flows.store.runs, project, name, 50)
    return page(
        c.request,
        "workflow.html",
        console=c,
        name=name,
        versions=versions,
        graph=svg(spec, flows.compiler),
        spec=_json(versions[0]["spec"]),
        runs=runs,
    )


@router.get("/workflow-runs/{run_id}")
async def run(c: Annotated[Console, ui_require("workflows:read")], run_id: RunId) -> Response:
    flows = workflow_service(c.services)
    try:
        found = await flows.get(c.principal.project_id, run_id)
    except KeelError as exc:
        raise UiError(exc.status, exc.message) from None
    graph = None
    if found["kind"] == "workflow":
        versions = await db(
            flows.store.versions, c.principal.project_id, "workflow", found["workflow"]
        )
        spec = next((v["spec"] for v in versions if v["version"] == found["version"]), None)
        if spec is not None:
            states = {s["key"]: s["status"] for s in found["steps"]}
            graph = svg(WorkflowSpec.model_validate(spec), flows.compiler, states)
    start = min((s["started_us"] for s in found["steps"]), default=0)
    steps = [
        {
            **s,
            "offset_ms": round((s["started_us"] - start) / 1000, 1),
            "input_json": _json(s["input"]),
            "output_json": _json(s["output"]),
        }
        for s in found["steps"]
    ]
    return page(
        c.request,
        "workflow_run.html",
        console=c,
        run=found,
        steps=steps,
        graph=graph,
        input_json=_json(found["input"]),
        output_json=_json(found["output"]),
    )


@router.post("/workflow-runs/{run_id}/resume")
async def resume(c: Annotated[Console, ui_require("inference")], run_id: RunId) -> Response:
    try:
        await workflow_service(c.services).resume(c.principal, run_id, wait=False)
    except KeelError as exc:
        raise UiError(exc.status, exc.message) from None
    return redirect(f"/ui/workflow-runs/{run_id}?resumed=1")


@router.post("/workflow-runs/{run_id}/cancel")
async def cancel(c: Annotated[Console, ui_require("inference")], run_id: RunId) -> Response:
    try:
        await workflow_service(c.services).cancel(c.principal, run_id)
    except KeelError as exc:
        raise UiError(exc.status, exc.message) from None
    return redirect(f"/ui/workflow-runs/{run_id}?cancelled=1")
