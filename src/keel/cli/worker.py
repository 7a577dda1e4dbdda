"""`keel worker`: run jobs (batches) from the store without serving HTTP, beside `keel serve`
replicas on the same database; a progress bar per job it is running."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from keel.cli.client import fail
from keel.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from keel.jobs.system import JobSystem

console = Console(stderr=True)
REFRESH_SECONDS = 1.0


def worker(
    data_dir: Annotated[Path | None, typer.Option(help="Where Keel keeps its data.")] = None,
    database_url: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL shared with keel serve, e.g. postgresql://…")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, max=1024, help="Job items in flight at once.")
    ] = None,
    local_model: Annotated[
        bool | None,
        typer.Option(
            "--local-model/--no-local-model",
            help="Serve the bundled SmolLM2 in this worker, for lines that name it.",
        ),
    ] = None,
    embeddings: Annotated[
        bool | None,
        typer.Option(
            "--embeddings/--no-embeddings",
            help="Load the bundled MiniLM in this worker, for /v1/embeddings lines.",
        ),
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning or error.")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="keel.yaml to read (default ./keel.yaml).")
    ] = None,
) -> None:
    """Run jobs (batches) from the store, without the HTTP server; Ctrl-C stops after the items
    in flight are recorded, and gives the jobs back to other workers at once."""
    flags = {
        "data_dir": data_dir,
        "database_url": database_url,
        "jobs_concurrency": concurrency,
        "local_model": local_model,
        "embeddings": embeddings,
        "log_level": log_level,
    }
    try:
        settings = load_settings(config_file=config, cli=flags).settings
    except SettingsError as exc:
        raise fail(str(exc), 2) from exc
    if settings.ray_address and not settings.ray_callback_url:
        raise fail(
            "KEEL_RAY_ADDRESS is set, but a worker serves no API for the Ray actors to call; "
            "set KEEL_RAY_CALLBACK_URL to a keel serve (or its load balancer), or unset "
            "KEEL_RAY_ADDRESS to run the items in this worker",
            2,
        )
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    os.umask(0o077)  # the store and spill files hold prompts and answers
    try:
        asyncio.run(_run(settings))
    except Exception as exc:
        raise fail(f"the worker stopped: {exc}") from exc


async def _run(settings: Settings) -> None:
    from keel.server.admin.evals import eval_service
    from keel.server.openai.files import job_system
    from keel.server.services import start_services, stop_services

    services = await start_services(settings)
    system = job_system(services)
    eval_service(services)  # evaluation's experiments are jobs this worker runs too
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    database = settings.effective_database_url.split("://")[0]
    console.print(
        f"worker [bold]{system.executor.worker}[/] running jobs from the {database} store "
        f"({settings.jobs_concurrency} items at once); Ctrl-C stops"
    )
    await system.start()
    try:
        await _follow(system, stop)
    finally:
        console.print("stopping: recording the items in flight, giving the jobs back")
        await system.stop()
        await stop_services(services)
    console.print("stopped")


async def _follow(system: JobSystem, stop: asyncio.Event) -> None:
    """A bar per job this worker runs, read from the store every second, until stopped."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeRemainingColumn(),
    )
    bars: dict[str, TaskID] = {}
    with Progress(*columns, console=console, transient=False) as progress:
        while not stop.is_set():
            for job_id in system.executor.running_jobs:
                job = await asyncio.to_thread(system.store.get, job_id)
                if job is None:
                    continue
                if job_id not in bars:
                    bars[job_id] = progress.add_task(
                        f"{job.kind} {job.id}", total=job.total, failed=0
                    )
                progress.update(bars[job_id], completed=job.done + job.failed, failed=job.failed)
            for job_id, bar in list(bars.items()):
                if job_id not in system.executor.running_jobs:
                    job = await asyncio.to_thread(system.store.get, job_id)
                    if job is not None:
                        progress.update(bar, completed=job.done + job.failed, failed=job.failed)
                        progress.console.print(f"{job.kind} {job.id}: {job.state}")
                    progress.remove_task(bar)
                    del bars[job_id]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REFRESH_SECONDS)
