"""`keel finetune create|list|show|watch|cancel`: LoRA jobs that end as a new model version,
optionally compared with their base and put on a route as a canary."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from keel.cli.client import Api, ConfigOption, KeyOption, UrlOption, fail

app = typer.Typer(
    help="Fine-tuning: LoRA jobs that end as a new model version.", no_args_is_help=True
)
out = Console()

_FINAL = ("succeeded", "failed", "cancelled")
_STYLE = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "running": "cyan"}


def _upload(api: Api, path: Path) -> str:
    if not path.is_file():
        raise fail(f"no file {path}; give a JSONL of {{'messages': [...]}} conversations")
    try:
        response = httpx.post(
            f"{api.base}/v1/files",
            headers=api._headers,
            timeout=120,
            files={"file": (path.name, path.read_bytes())},
            data={"purpose": "fine-tune"},
        )
    except httpx.HTTPError as exc:
        raise fail(f"could not reach {api.base}: {exc}") from exc
    if response.status_code >= 400:
        message = response.json().get("error", {}).get("message", response.text)
        raise fail(f"{path}: {message}")
    return str(response.json()["id"])


def jobs_table(jobs: list[dict[str, Any]]) -> Table:
    table = Table(
        "id", "base", "status", "model", "examples", "created (UTC)", title="Fine-tuning jobs"
    )
    for job in jobs:
        table.add_row(
            job["id"],
            job["model"] or "-",
            Text(job["status"], style=_STYLE.get(job["status"], "")),
            job["fine_tuned_model"] or "-",
            str(
                (job.get("keel") or {}).get("scan", {}) and job["keel"]["scan"].get("examples", "-")
            ),
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(job["created_at"])),
        )
    return table


@app.command("create")
def create(
    training_file: Annotated[Path, typer.Argument(help="JSONL of chat conversations.")],
    model: Annotated[
        str, typer.Option(help="Base model version (name@version or name).")
    ] = "smollm2",
    validation_file: Annotated[
        Path | None, typer.Option(help="Held-out JSONL (default: 10% of the training file).")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Passes over the data (default: auto).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Examples per step (default: auto).")
    ] = None,
    lr_multiplier: Annotated[
        float | None, typer.Option(help="Learning rate multiplier (default: auto).")
    ] = None,
    suffix: Annotated[str | None, typer.Option(help="Name the version <base>-<suffix>.")] = None,
    anonymize_pii: Annotated[
        bool, typer.Option(help="Replace PII with placeholders before training.")
    ] = False,
    block: Annotated[
        bool, typer.Option(help="Fail when secrets or planted instructions are found.")
    ] = False,
    watch_job: Annotated[
        bool, typer.Option("--watch/--no-watch", help="Follow the job until it ends.")
    ] = True,
    canary: Annotated[
        int | None,
        typer.Option(help="Put the new version on --route at this percent if it beats its base."),
    ] = None,
    route: Annotated[
        str | None, typer.Option(help="Route for --canary (default: the base's name).")
    ] = None,
    eval_file: Annotated[
        Path | None,
        typer.Option(
            help="Held-out JSONL the job's evaluation answers (default: the validation data)."
        ),
    ] = None,
    min_margin: Annotated[
        float, typer.Option(help="Accuracy the tuned version must gain for --canary.")
    ] = 0.1,
    evaluate: Annotated[
        bool,
        typer.Option(
            "--evaluate/--no-evaluate", help="Compare the new version with its base when done."
        ),
    ] = True,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Upload the data, create a job, follow it; with --canary, ship at N % when the job's
    evaluation against the base passes its gate."""
    if canary is not None and not 1 <= canary <= 50:
        raise fail("--canary is a percentage from 1 to 50")
    if canary is not None and not evaluate:
        raise fail("--canary ships on the job's evaluation: drop --no-evaluate")
    if not 0 <= min_margin < 1:
        raise fail("--min-margin is a share of the held-out answers, from 0 to below 1")
    api = Api(url, key, config)
    body: dict[str, Any] = {"model": model, "training_file": _upload(api, training_file)}
    if validation_file is not None:
        body["validation_file"] = _upload(api, validation_file)
    hyper = {
        "n_epochs": epochs,
        "batch_size": batch_size,
        "learning_rate_multiplier": lr_multiplier,
    }
    body["hyperparameters"] = {k: v for k, v in hyper.items() if v is not None}
    if suffix:
        body["suffix"] = suffix
    body["guard"] = {"anonymize_pii": anonymize_pii, "block": block}
    from keel.finetune.compare import margin_gate

    body["evaluation"] = {"enabled": evaluate, "gate": margin_gate(min_margin)}
    if eval_file is not None:
        body["evaluation"]["file"] = _upload(api, eval_file)
    job = api.call("POST", "/v1/fine_tuning/jobs", body)
    out.print(f"created [bold]{job['id']}[/] on {job['model']}")
    if not watch_job and canary is None:
        return
    job = follow(api, job["id"])
    if job["status"] != "succeeded":
        raise typer.Exit(1)
    if canary is not None:
        ship_canary(api, job, canary, route or job["model"].split("@")[0])


def follow(api: Api, job_id: str, interval: float = 1.0) -> dict[str, Any]:
    """A progress bar (step, loss, tokens/s, time left) and the job's messages until it ends."""
    seen: set[str] = set()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=out,
    ) as bar:
        task = bar.add_task(job_id, total=None, info="")
        while True:
            job = api.call("GET", f"/v1/fine_tuning/jobs/{job_id}")
            events = api.call("GET", f"/v1/fine_tuning/jobs/{job_id}/events", limit="50")["data"]
            metrics = None
            for event in reversed(events):
                if event["type"] == "metrics":
                    metrics = event["data"]
                elif event["id"] not in seen:
                    bar.console.print(f"{event['level']}: {event['message']}")
                seen.add(event["id"])
            if metrics is not None:
                eta = metrics.get("eta_seconds")
                info = (
                    f"loss {metrics['train_loss']:.3f}  {metrics['tokens_per_second']:,.0f} tok/s"
                    + (f"  ETA {eta:,.0f}s" if eta is not None else "")
                )
                bar.update(task, total=metrics["total_steps"], completed=metrics["step"], info=info)
            bar.update(task, description=f"{job_id} {job['status']}")
            if job["status"] in _FINAL:
                break
            time.sleep(interval)
    style = _STYLE.get(job["status"], "")
    out.print(
        Text(f"{job_id}: {job['status']}", style=style)
        + Text(f" → {job['fine_tuned_model']}" if job["fine_tuned_model"] else "")
    )
    if job["error"]:
        out.print(Text(f"error: {job['error']['message']}", style="red"))
    return dict(job)


def canary_split(targets: dict[str, int], tuned: str, percent: int) -> dict[str, int]:
    """The route's current targets scaled to 100 - percent, and `tuned` at `percent`."""
    kept = {ref: w for ref, w in targets.items() if ref != tuned}
    total = sum(kept.values()) or 1
    split = {ref: round(w * (100 - percent) / total) for ref, w in kept.items()}
    split[tuned] = percent
    return split


def wait_for_runs(api: Api, runs: list[str], interval: float = 1.0) -> list[dict[str, Any]]:
    """The experiment runs, once all have ended, with a bar of their answered items."""
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=out
    ) as bar:
        task = bar.add_task("evaluating", total=None)
        while True:
            found = [api.call("GET", f"/api/experiments/{run}") for run in runs]
            progress = [r["progress"] for r in found]
            bar.update(
                task,
                total=sum(p["total"] for p in progress) or None,
                completed=sum(p["done"] + p["failed"] for p in progress),
            )
            if all(r["state"] in _FINAL for r in found):
                return found
            time.sleep(interval)


def ship_canary(api: Api, job: dict[str, Any], percent: int, route: str) -> None:
    """Wait for the job's evaluation (an experiment: base and tuned runs on held-out data);
    when its gate passes, split the route."""
    evaluation = ((job.get("keel") or {}).get("result") or {}).get("evaluation")
    tuned = job["fine_tuned_model"]
    if not evaluation or "runs" not in evaluation:
        why = (evaluation or {}).get("error", "the job made no evaluation")
        raise fail(f"{why}; {route} is unchanged")
    runs = evaluation["runs"]
    out.print(
        f"comparing {tuned} with {job['model']} on {evaluation['items']} held-out "
        f"conversations: runs {runs['base']} and {runs['tuned']}"
    )
    base_run, tuned_run = wait_for_runs(api, [runs["base"], runs["tuned"]])
    for run in (base_run, tuned_run):
        if run["state"] != "succeeded":
            raise fail(f"evaluation run {run['id']} {run['state']}; {route} is unchanged")
    checked = api.call(
        "POST",
        f"/api/experiments/{runs['tuned']}/gates",
        {"gates": [evaluation["gate"]], "baseline": runs["base"]},
    )
    (gate,) = checked["gates"]
    out.print(f"gate {gate['gate']}: {gate['message']}")
    if not checked["passed"]:
        raise fail(
            f"the gate did not pass (the 95% interval of the gain must clear it); {route} is "
            f"unchanged; compare the runs with 'keel eval compare {runs['base']} {runs['tuned']}'"
        )
    current = api.call("GET", f"/api/routes/{route}")
    split = canary_split(current["targets"], tuned, percent)
    api.call("POST", f"/api/routes/{route}/split", {"targets": split})
    out.print(
        f"[green]{route}: {tuned} gets {percent}% of the traffic[/]; "
        f"roll back with 'keel routes rollback {route}'"
    )


@app.command("list")
def list_jobs(
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """List the project's fine-tuning jobs, newest first."""
    found = Api(url, key, config).call("GET", "/v1/fine_tuning/jobs", limit=str(limit))
    if not found["data"]:
        out.print("no fine-tuning jobs yet; start one with 'keel finetune create data.jsonl'")
        return
    out.print(jobs_table(found["data"]))


@app.command("show")
def show(
    job_id: Annotated[str, typer.Argument(help="The job's id (ftjob_…).")],
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Show one job: status, scan findings, checkpoints, the new version's lineage and its
    evaluation runs."""
    api = Api(url, key, config)
    job = api.call("GET", f"/v1/fine_tuning/jobs/{job_id}")
    out.print(jobs_table([job]))
    extra = job.get("keel") or {}
    if extra.get("scan"):
        scan = extra["scan"]
        out.print(
            f"scan: {scan['examples']} examples, {scan['pii']} PII, {scan['secrets']} "
            f"secrets, {scan['injections']} planted instructions, "
            f"{scan['anonymized']} messages anonymised"
        )
    checkpoints = api.call("GET", f"/v1/fine_tuning/jobs/{job_id}/checkpoints", limit="100")
    table = Table("step", "train loss", "validation loss", title="Checkpoints")
    for c in reversed(checkpoints["data"]):
        m = c["metrics"]
        valid = "-" if m["valid_loss"] is None else f"{m['valid_loss']:.4f}"
        table.add_row(str(c["step_number"]), f"{m['train_loss']:.4f}", valid)
    out.print(table)
    if extra.get("lineage"):
        lineage = extra["lineage"]
        metrics = lineage.get("metrics", {})
        out.print(
            f"lineage: {job['fine_tuned_model']} ← {lineage['base_model']} + "
            f"{lineage['training_file']} (job {lineage['job_id']}); validation loss "
            f"{metrics.get('first_valid_loss')} → {metrics.get('best_valid_loss')}"
        )
    evaluation = (extra.get("result") or {}).get("evaluation")
    if evaluation and "runs" in evaluation:
        runs = evaluation["runs"]
        out.print(
            f"evaluation: {runs['base']} (base) and {runs['tuned']} (tuned) on "
            f"{evaluation['dataset']}; compare with 'keel eval compare {runs['base']} "
            f"{runs['tuned']}'"
        )
    elif evaluation:
        out.print(Text(f"evaluation not started: {evaluation['error']}", style="yellow"))
    if job["error"]:
        out.print(Text(f"error: {job['error']['message']}", style="red"))


@app.command("watch")
def watch(
    job_id: Annotated[str, typer.Argument(help="The job's id (ftjob_…).")],
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Follow a job: step, loss, tokens/s and time left, until it ends."""
    if follow(Api(url, key, config), job_id)["status"] != "succeeded":
        raise typer.Exit(1)


@app.command("cancel")
def cancel(
    job_id: Annotated[str, typer.Argument(help="The job's id (ftjob_…).")],
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Cancel a job: training stops at its next step and no version is registered."""
    job = Api(url, key, config).call("POST", f"/v1/fine_tuning/jobs/{job_id}/cancel")
    out.print(f"{job_id}: {job['status']}")
