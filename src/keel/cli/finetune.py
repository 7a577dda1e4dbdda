"""`keel finetune create|list|show|watch|cancel`: LoRA jobs that end as a new model version,
optionally compared with their base and put on a route as a canary."""

from __future__ import annotations

import asyncio
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
        typer.Option(help="Held-out JSONL for the --canary gate (default: --validation-file)."),
    ] = None,
    min_margin: Annotated[
        float, typer.Option(help="Accuracy the tuned version must gain for --canary.")
    ] = 0.1,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Upload the data, create a job, follow it; with --canary, compare and ship at N %."""
    if canary is not None and not 1 <= canary <= 50:
        raise fail("--canary is a percentage from 1 to 50")
    held = eval_file or validation_file
    if canary is not None and held is None:
        raise fail("--canary needs held-out data: give --eval-file or --validation-file")
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
    job = api.call("POST", "/v1/fine_tuning/jobs", body)
    out.print(f"created [bold]{job['id']}[/] on {job['model']}")
    if not watch_job and canary is None:
        return
    job = follow(api, job["id"])
    if job["status"] != "succeeded":
        raise typer.Exit(1)
    if canary is not None and held is not None:
        ship_canary(api, job, held, canary, route or job["model"].split("@")[0], min_margin)


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


def ship_canary(
    api: Api, job: dict[str, Any], held: Path, percent: int, route: str, min_margin: float
) -> None:
    """Compare tuned and base on `held` through the gateway; on a pass, split the route."""
    from keel.finetune.compare import compare
    from keel.finetune.data import parse_examples

    examples = parse_examples(held.read_bytes())
    base, tuned = job["model"], job["fine_tuned_model"]

    async def answer(model: str, messages: list[dict[str, str]]) -> str:
        result = await asyncio.to_thread(
            api.call,
            "POST",
            "/v1/chat/completions",
            {"model": model, "messages": messages, "temperature": 0, "max_tokens": 64},
        )
        return str(result["choices"][0]["message"]["content"] or "")

    out.print(f"comparing {tuned} with {base} on {len(examples)} held-out conversations …")
    result = asyncio.run(compare(answer, base, tuned, examples, min_margin=min_margin))
    out.print(
        f"base {result.base_accuracy:.1%}, tuned {result.tuned_accuracy:.1%}; "
        f"gate {result.gate.gate.text}: {result.gate.message}"
    )
    if not result.passed:
        raise fail(
            f"the gate did not pass (the 95% interval of the gain must clear "
            f"{min_margin:+.0%}); {route} is unchanged"
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
    """Show one job: status, scan findings, checkpoints and the new version's lineage."""
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
