"""`keel jobs list|show|watch|cancel`: long work (batches) with its progress and events."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from keel.cli.client import Api, ConfigOption, KeyOption, UrlOption

app = typer.Typer(help="Jobs: batches and other long work.", no_args_is_help=True)
out = Console()

_FINAL = ("succeeded", "failed", "cancelled")
_STYLE = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "cancelling": "yellow"}


def _when(value: float | None) -> str:
    if value is None:
        return "-"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _rate(progress: dict[str, Any]) -> str:
    rate, eta = progress.get("rate"), progress.get("eta_seconds")
    text = "-" if rate is None else f"{rate:,.1f}/s"
    return text if eta is None or eta == 0 else f"{text}, {eta:,.0f}s left"


def jobs_table(jobs: list[dict[str, Any]]) -> Table:
    table = Table(
        "id", "kind", "state", "done", "failed", "total", "rate", "created (UTC)", title="Jobs"
    )
    for job in jobs:
        p = job["progress"]
        table.add_row(
            job["id"],
            job["kind"],
            Text(job["state"], style=_STYLE.get(job["state"], "")),
            f"{p['done']:,}",
            f"{p['failed']:,}",
            f"{p['total']:,}",
            _rate(p),
            _when(job["created_at"]),
        )
    return table


@app.command("list")
def list_jobs(
    kind: Annotated[str | None, typer.Option(help="Only jobs of this kind (batch).")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """List the project's jobs, newest first."""
    found = Api(url, key, config).call("GET", "/api/jobs", kind=kind, limit=str(limit))
    if not found["data"]:
        out.print("no jobs yet; create a batch with the OpenAI SDK (client.batches.create)")
        return
    out.print(jobs_table(found["data"]))


@app.command("show")
def show(
    job_id: Annotated[str, typer.Argument(help="The job's id (a batch's id).")],
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Show one job: state, progress, items by state, results and its events."""
    job = Api(url, key, config).call("GET", f"/api/jobs/{job_id}")
    out.print(jobs_table([job]))
    items = ", ".join(f"{state} {count:,}" for state, count in sorted(job["items"].items()))
    out.print(f"items: {items or '-'}")
    for name, ref in job["result"].items():
        out.print(f"{name}: {ref}")
    if job["error"]:
        out.print(Text(f"error: {job['error']}", style="red"))
    events = Table("time (UTC)", "level", "event", title="Events")
    for event in job["events"]:
        events.add_row(_when(event["at"]), event["level"], event["message"])
    out.print(events)


@app.command("watch")
def watch(
    job_id: Annotated[str, typer.Argument(help="The job's id (a batch's id).")],
    interval: Annotated[float, typer.Option(help="Seconds between looks.")] = 1.0,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Follow a job's progress bar and events until it ends."""
    api = Api(url, key, config)
    seen = 0
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=out,
    ) as bar:
        task = bar.add_task(job_id, total=None, rate="")
        while True:
            job = api.call("GET", f"/api/jobs/{job_id}", events_after=str(seen))
            for event in job["events"]:
                bar.console.print(f"{_when(event['at'])} {event['level']}: {event['message']}")
                seen = max(seen, event["id"])
            p = job["progress"]
            bar.update(
                task,
                total=p["total"],
                completed=p["done"] + p["failed"],
                description=f"{job_id} {job['state']}",
                rate=_rate(p),
            )
            if job["state"] in _FINAL:
                break
            time.sleep(interval)
    if job["state"] != "succeeded":
        raise typer.Exit(1)


@app.command("cancel")
def cancel(
    job_id: Annotated[str, typer.Argument(help="The job's id (a batch's id).")],
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Cancel a job: no new item starts; those in flight end and are kept."""
    job = Api(url, key, config).call("POST", f"/api/jobs/{job_id}/cancel")
    out.print(f"{job_id}: {job['state']} ({job['progress']['done']:,} done so far)")
