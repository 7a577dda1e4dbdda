"""`keel deploy`, `keel undeploy`, `keel deployments list`: local model servers."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Console
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
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for the replicas (0: no wait).")
    ] = 120,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Serve a model version with N supervised llama.cpp replicas (or rescale it)."""
    api = Api(url, key, config)
    api.call("PUT", "/api/deployments", {"model": model, "replicas": replicas})
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
            time.sleep(0.3)
        else:
            raise fail(f"{model} is not fully ready after {wait:.0f}s; see 'keel deployments list'")
    out.print(f"[green]deployed[/] [bold]{model}[/]: {replicas} replica(s) ready")


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
    """List deployments and the state of each replica."""
    table = Table("model", "ready", "replica", "port", "pid", "state", "restarts", "in flight")
    for d in Api(url, key, config).call("GET", "/api/deployments"):
        processes = d["processes"] or [{}]
        for index, p in enumerate(processes):
            table.add_row(
                d["model"] if index == 0 else "",
                f"{d['ready']}/{d['replicas']}" if index == 0 else "",
                str(index), str(p.get("port", "-")), str(p.get("pid", "-")),
                p.get("state", "-"), str(p.get("restarts", "-")), str(p.get("outstanding", "-")),
            )  # fmt: skip
    out.print(table)
