"""`keel run NAME --input …` and `keel workflows list|show|runs|status|resume|cancel`."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from keel.cli.client import Api, ConfigOption, KeyOption, UrlOption, fail

app = typer.Typer(help="Workflows and agents: definitions and runs.", no_args_is_help=True)
out = Console()

_FINAL = ("succeeded", "failed", "cancelled")
_STYLE = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "running": "cyan"}
AgentOption = Annotated[bool, typer.Option("--agent", help="NAME is an agent, not a workflow.")]


def _when(value: float | None) -> str:
    if value is None:
        return "-"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _input(text: str) -> Any:
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise fail(f"cannot read {text[1:]}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {"text": text}  # plain text: the workflow's or agent's text input


def runs_table(runs: list[dict[str, Any]]) -> Table:
    table = Table(
        "id", "workflow", "version", "status", "failed step", "ms", "created (UTC)", title="Runs"
    )
    for run in runs:
        table.add_row(
            run["id"],
            run["workflow"],
            str(run["version"]),
            Text(run["status"], style=_STYLE.get(run["status"], "")),
            run.get("failed_step") or "",
            f"{run.get('duration_ms') or 0:,.0f}",
            _when(run["created_at"]),
        )
    return table


def _show_run(run: dict[str, Any]) -> None:
    out.print(
        f"run {run['id']} of {run['kind']} {run['workflow']} v{run['version']}: "
        f"[{_STYLE.get(run['status'], '')}]{run['status']}[/]"
    )
    if run.get("trace_id"):
        out.print(f"trace: {run['trace_id']}")
    steps = Table("step", "kind", "status", "ms", "output", title="Steps")
    for step in run.get("steps", []):
        shown = json.dumps(step["output"] if step["status"] == "done" else step["error"])
        steps.add_row(
            step["key"], step["kind"], step["status"], f"{step['duration_ms']:,.1f}", shown[:80]
        )
    out.print(steps)
    if run.get("error"):
        out.print(f"[red]error:[/] {run['error']}")
        out.print(f"resume it after a fix: keel workflows resume {run['id']}")
    elif run["status"] == "succeeded":
        out.print_json(json.dumps(run["output"]))


def _follow(api: Api, run_id: str, job_id: str | None = None) -> dict[str, Any]:
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=out,
        transient=True,
    ) as progress:
        task = progress.add_task(f"run {run_id}", total=None)
        while True:
            run: dict[str, Any] = api.call("GET", f"/api/workflow-runs/{run_id}")
            done = sum(1 for s in run["steps"] if s["status"] == "done")
            shown = f"run {run_id}: {run['status']}, {done} steps done"
            if job_id is not None:  # the map's items, as its job counts them
                job = api.call("GET", f"/api/jobs/{job_id}")["progress"]
                shown += f" (job {job_id}: {job['done']}/{job['total']} items)"
            progress.update(task, description=shown)
            if run["status"] in _FINAL:
                return run
            time.sleep(0.5)


def run(
    name: Annotated[str, typer.Argument(help="The workflow (or, with --agent, agent) to run.")],
    input: Annotated[str, typer.Option("--input", "-i", help="JSON, @file.json, or text.")] = "{}",
    agent: AgentOption = False,
    wait: Annotated[bool, typer.Option(help="Follow the run to its end.")] = True,
    job: Annotated[
        bool, typer.Option("--job", help="Run it as a job: one job item per map item.")
    ] = False,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Run a workflow or agent and show its steps and output."""
    api = Api(url, key, config)
    kind = "agent" if agent else "workflow"
    mode = "job" if job else "async"
    started = api.call(
        "POST", f"/api/workflows/{name}/runs", {"input": _input(input), "mode": mode}, kind=kind
    )
    job_id = started.get("job_id")
    if job_id:
        out.print(f"run {started['id']} is driven by job {job_id} (keel jobs watch {job_id})")
    if not wait:
        out.print(
            f"started run {started['id']}; follow it with: keel workflows status {started['id']}"
        )
        return
    finished = _follow(api, started["id"], job_id)
    _show_run(finished)
    if finished["status"] != "succeeded":
        raise typer.Exit(1)


@app.command("list")
def list_definitions(
    agents: Annotated[bool, typer.Option("--agents", help="List agents instead.")] = False,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """List the project's workflows (or agents)."""
    kind = "agent" if agents else "workflow"
    found = Api(url, key, config).call("GET", "/api/workflows", kind=kind)
    if not found["data"]:
        out.print(f"no {kind}s yet; declare them under {kind}s: in YAML and run 'keel apply'")
        return
    table = Table("name", "version", "archived", "updated (UTC)", title=f"{kind.title()}s")
    for item in found["data"]:
        table.add_row(
            item["name"],
            str(item["latest_version"]),
            "yes" if item["archived"] else "",
            _when(item["updated_at"]),
        )
    out.print(table)


@app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="Workflow or agent name.")],
    agent: AgentOption = False,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Show a workflow's (or agent's) newest version and its version history."""
    kind = "agent" if agent else "workflow"
    found = Api(url, key, config).call("GET", f"/api/workflows/{name}", kind=kind)
    newest = found["versions"][0]
    out.print(f"{kind} {name}, version {newest['version']}")
    out.print_json(json.dumps(newest["spec"]))
    for version in found["versions"]:
        out.print(f"  v{version['version']}  {_when(version['created_at'])}  {version['message']}")


@app.command("runs")
def runs(
    name: Annotated[str | None, typer.Argument(help="Only this workflow's runs.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """List runs, newest first."""
    api = Api(url, key, config)
    path = f"/api/workflows/{name}/runs" if name else "/api/workflow-runs"
    found = api.call("GET", path, limit=str(limit))
    if not found["data"]:
        out.print("no runs yet; start one with: keel run NAME --input '{…}'")
        return
    out.print(runs_table(found["data"]))


@app.command("status")
def status(
    run_id: Annotated[str, typer.Argument(help="The run's id (wfr_…).")],
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Show one run: its status, each step's checkpoint, and its output or error."""
    _show_run(Api(url, key, config).call("GET", f"/api/workflow-runs/{run_id}"))


@app.command("resume")
def resume(
    run_id: Annotated[str, typer.Argument(help="A failed or cancelled run's id.")],
    wait: Annotated[bool, typer.Option(help="Follow the run to its end.")] = True,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Resume a run from its first incomplete step (completed steps are not run again)."""
    api = Api(url, key, config)
    api.call("POST", f"/api/workflow-runs/{run_id}/resume", {"mode": "async"})
    if not wait:
        out.print(f"resumed {run_id}")
        return
    finished = _follow(api, run_id)
    _show_run(finished)
    if finished["status"] != "succeeded":
        raise typer.Exit(1)


@app.command("cancel")
def cancel(
    run_id: Annotated[str, typer.Argument(help="A running run's id.")],
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Cancel a run; it stops before its next step (resume it later if you wish)."""
    Api(url, key, config).call("POST", f"/api/workflow-runs/{run_id}/cancel")
    out.print(f"cancel requested for {run_id}")
