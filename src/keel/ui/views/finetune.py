"""Fine-tuning in the console: every job with its status, and one job's loss curves
(training and validation per checkpoint), checkpoints, scan findings, the lineage of the
version it made and its evaluation against the base (the experiment's two runs and gate)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import Response

from keel.errors import KeelError, NotFound
from keel.evals.gates import metric_value, parse_gate
from keel.finetune.service import status
from keel.finetune.store import Checkpoint
from keel.server.admin.evals import eval_service
from keel.server.openai.fine_tuning import fine_tune_system
from keel.server.services import Services
from keel.ui.charts import Chart, Series
from keel.ui.web import Console, UiError, UiRoute, db, page, ui_require

router = APIRouter(route_class=UiRoute)

JobId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


@dataclass(frozen=True)
class StepChart(Chart):
    """A chart over training steps rather than time."""

    def label(self, us: int) -> str:
        return f"step {us}"


def loss_chart(checkpoints: list[Checkpoint]) -> StepChart:
    ordered = sorted(checkpoints, key=lambda c: c.step)
    return StepChart(
        "loss",
        "Loss per checkpoint (training, validation)",
        [c.step for c in ordered],
        [
            Series("training", [c.train_loss for c in ordered]),
            Series("validation", [c.valid_loss for c in ordered]),
        ],
        lambda v: "-" if v is None else f"{v:.3f}",
    )


def _evaluation(services: Services, project_id: str, result: dict[str, Any]) -> dict[str, Any]:
    """The job's evaluation for the page: each run's state and score, and once both have
    finished, the gate on the tuned run's paired difference from the base run."""
    evaluation = dict(result.get("evaluation") or {})
    if "runs" not in evaluation:
        return evaluation
    service = eval_service(services)
    metric = parse_gate(evaluation["gate"]).metric
    runs = {}
    try:
        for role, run_id in evaluation["runs"].items():
            job = service.get(project_id, run_id)
            summary = job.result.get("summary") or {}
            runs[role] = {"id": run_id, "state": job.state, "progress": job.progress(),
                          "score": metric_value(summary, metric)}  # fmt: skip
        if all(run["state"] == "succeeded" for run in runs.values()):
            (gate,) = service.gates(
                project_id, runs["tuned"]["id"], [evaluation["gate"]], runs["base"]["id"]
            )
            evaluation["verdict"] = gate
    except KeelError as error:  # a run deleted since: say so instead of failing the page
        evaluation["problem"] = error.message
    evaluation["metric"], evaluation["run_views"] = metric, runs
    return evaluation


@router.get("/finetune")
async def jobs(c: Annotated[Console, ui_require("models:read")]) -> Response:
    service = fine_tune_system(c.services).service
    pairs, more = await db(service.page, c.principal.project_id, None, 100)
    rows = [(job, run, status(job, run)) for job, run in pairs]
    return page(c.request, "finetune.html", console=c, rows=rows, more=more)


@router.get("/finetune/{job_id}")
async def job(c: Annotated[Console, ui_require("models:read")], job_id: JobId) -> Response:
    service = fine_tune_system(c.services).service
    try:
        found, run = await db(service.job, c.principal.project_id, job_id)
    except NotFound:
        raise UiError(404, f"no fine-tuning job '{job_id}' in this project") from None
    checkpoints = await db(service.runs.checkpoints, job_id, limit=1000)
    events = await db(service.jobs.events, job_id, limit=2000)
    evaluation = await db(_evaluation, c.services, c.principal.project_id, found.result)
    messages = [e for e in events if e.data.get("type") != "metrics"][-100:]
    latest = next((e.data for e in reversed(events) if e.data.get("type") == "metrics"), None)
    return page(
        c.request,
        "finetune_job.html",
        console=c,
        job=found,
        run=run,
        job_status=status(found, run),
        checkpoints=sorted(checkpoints, key=lambda x: x.step),
        chart=loss_chart(checkpoints) if checkpoints else None,
        events=messages,
        latest=latest,
        evaluation=evaluation,
    )
