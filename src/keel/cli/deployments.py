"""`keel deploy`, `keel undeploy`, `keel deployments list`: local model servers."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from keel.cli.client import Api, ConfigOption, KeyOption, UrlOption, fail

app = typer.Typer(help="Local deployments and their replicas.", no_args_is_help=True)
out = Console()


def deploy(
    model: Annotated[
        str, typer.Argument(help="Model version of a local provider, e.g. smollm2@1.")
    ],
    replicas: Annotated[int, typer.Option(help="llama.cpp server processes.")] = 1,
    on: Annotated[
        str,
        typer.Option(
            "--on",
            help="local (child processes of Keel) or ray (actors on the Ray cluster at "
            "KEEL_RAY_ADDRESS, restarted by Ray when they die).",
        ),
    ] = "local",
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for the replicas (0: no wait).")
    ] = 120,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Serve a model version with N supervised llama.cpp replicas (or rescale it)."""
    if on not in ("local", "ray"):
        raise fail(f"--on {on!r} is not a placement; use --on local or --on ray", 2)
    api = Api(url, key, config)
    api.call("PUT", "/api/deployments", {"model": model, "replicas": replicas, "on": on})
    if wait <= 0:
        out.print(f"deploying [bold]{model}[/] with {replicas} replica(s)")
        return
    deadline = time.monotonic() + wait
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=out, transient=True) as progress:
        task = progress.add_task(f"starting {model}", total=replicas)
        while time.monotonic() < deadline:
            status = {d["model"]: d for d in api.call("GET", "/api/deployments")}.get(model)
            ready = status["ready"] if status else 0
            progress.update(task, completed=ready,
                            description=f"{model}: {ready}/{replicas} replicas ready")  # fmt: skip
            if ready >= replicas:
                break
            if status and status.get("state") == "crashlooping":
                cause = (status.get("last_crash") or {}).get("cause", "unknown cause")
                raise fail(
                    f"{model} is crashlooping: {cause}; Keel keeps restarting it. "
                    "See 'keel deployments list' for its log's last lines"
                )
            time.sleep(0.3)
        else:
            raise fail(f"{model} is not fully ready after {wait:.0f}s; see 'keel deployments list'")
    where = " on Ray" if on == "ray" else ""
    out.print(f"[green]deployed[/] [bold]{model}[/]: {replicas} replica(s) ready{where}")


def undeploy(
    model: Annotated[str, typer.Argument(help="Model version to stop serving.")],
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Stop a model version's replicas."""
    Api(url, key, config).call("DELETE", f"/api/deployments/{model}")
    out.print(f"undeployed [bold]{model}[/]")


@app.command("list")
def list_deployments(
    url: UrlOption = None, key: KeyOption = None, config: ConfigOption = None
) -> None:
    """List deployments, the state of each replica, and the cause of the latest crash."""
    table = Table("model", "on", "ready", "replica", "port", "pid", "state", "next start",
                  "restarts", "crashes", "in flight")  # fmt: skip
    deployments = Api(url, key, config).call("GET", "/api/deployments")
    for d in deployments:
        processes = d["processes"] or [{}]
        for index, p in enumerate(processes):
            due = p.get("next_restart_at")
            table.add_row(
                d["model"] if index == 0 else "",
                d.get("on", "local") if index == 0 else "",
                f"{d['ready']}/{d['replicas']}" if index == 0 else "",
                str(index), str(p.get("port") or "-"), str(p.get("pid") or "-"),
                p.get("state", "-"), f"in {max(0.0, due - time.time()):.1f}s" if due else "-",
                str(p.get("restarts", "-")), str(p.get("crashes", "-")),
                str(p.get("outstanding", "-")),
            )  # fmt: skip
    out.print(table)
    for d in deployments:
        _print_crash(d["model"], d.get("state", "-"), d.get("last_crash"))


def _print_crash(model: str, state: str, crash: dict[str, Any] | None) -> None:
    if not crash:
        return
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(crash["at"]))
    out.print(
        f"\n[bold]{model}[/] ({state}) replica {crash['replica']} {escape(crash['cause'])} "
        f"at {when}; log: {escape(crash['log_path'])} (then .1 after its restart)"
    )
    for line in crash["log_tail"]:
        out.print(f"  {escape(line)}", style="dim", highlight=False)
