"""`keel serve`: start the gateway and its local model servers in the foreground."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import uvicorn
from rich.console import Console
from rich.panel import Panel

from keel.cli.client import fail
from keel.deploy.bundled import BundledModelMissing
from keel.deploy.llamacpp import ModelServerFailed
from keel.server.protocol import HeaderDeadline
from keel.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from fastapi import FastAPI

console = Console(stderr=True)


class _StartupProgress:
    """Prints start-up steps with the time since `keel serve` began."""

    def __init__(self) -> None:
        self._started = time.monotonic()

    def __call__(self, message: str) -> None:
        console.print(f"[dim]{time.monotonic() - self._started:5.1f}s[/] {message}")


def _show_admin_key(key: str, path: Path) -> None:
    console.print(
        Panel(
            f"[bold]{key}[/]\n\nShown once. Saved for the local CLI at {path} (mode 0600).",
            title="First start: admin API key",
            border_style="yellow",
        )
    )


def _guard_line(policy: str) -> str:
    """Which guard policy covers requests that no project, route or key attachment covers."""
    if policy:
        return f"guard policy '{policy}' for requests no project, route or key policy covers"
    return (
        "guard off for requests no project, route or key policy covers "
        "(KEEL_GUARD_POLICY=default turns it on)"
    )


def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where Keel keeps its data.")] = None,
    database_url: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL, e.g. postgresql://user@host/db.")
    ] = None,
    local_model: Annotated[
        bool | None,
        typer.Option("--local-model/--no-local-model", help="Serve the bundled SmolLM2."),
    ] = None,
    embeddings: Annotated[
        bool | None,
        typer.Option("--embeddings/--no-embeddings", help="Serve the bundled MiniLM embeddings."),
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning or error.")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="keel.yaml to read (default ./keel.yaml).")
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Worker processes on one port; more than 1 needs KEEL_REDIS_URL and "
            "--no-local-model.",
        ),
    ] = 1,
) -> None:
    """Start Keel: the OpenAI-compatible gateway on /v1, with the bundled local model."""
    flags = {
        "host": host,
        "port": port,
        "data_dir": data_dir,
        "database_url": database_url,
        "local_model": local_model,
        "embeddings": embeddings,
        "log_level": log_level,
    }
    try:
        loaded = load_settings(config_file=config, cli=flags)
    except SettingsError as exc:
        raise fail(str(exc), 2) from exc
    settings = loaded.settings
    # Providers, models, routes, … in the same file are applied at start, idempotently.
    declarations = loaded.config_file if loaded.declarations else None
    if workers > 1:
        _check_workers(settings, workers)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # Everything Keel and its model servers write (database, spill files, logs) holds
    # prompts and answers: readable by this user only, whatever the shell's umask.
    os.umask(0o077)
    from keel.server.app import create_app
    from keel.server.protocol import http_protocol

    if workers > 1:
        _serve_workers(settings, workers, config, flags)
        return
    progress = _StartupProgress()
    app = create_app(
        settings, on_admin_key=_show_admin_key, progress=progress, declarations=declarations
    )
    progress(
        f"data in {settings.data_dir}; database {settings.effective_database_url.split('://')[0]}"
    )
    progress(_guard_line(settings.guard_policy))
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            loop="uvloop",
            http=http_protocol(settings.request_header_timeout),
            log_level=settings.log_level,
            access_log=False,
            timeout_graceful_shutdown=5,
        )
    )
    try:
        server.run()
    except (ModelServerFailed, BundledModelMissing) as exc:
        raise fail(str(exc)) from exc
    if not server.started:
        raise typer.Exit(1)


# -- several worker processes ------------------------------------------------------------------

_WORKER_SPEC = "_KEEL_SERVE_WORKER"  # how `keel serve` tells its workers what it was given


def _check_workers(settings: Settings, workers: int) -> None:
    """Refuse worker counts that would serve wrong answers, saying what to change."""
    problems = []
    if not settings.redis_url:
        problems.append(
            "KEEL_REDIS_URL (redis_url): without Redis each worker keeps its own rate limits, "
            "budgets and cache, and a change made through one worker (a new route, a revoked "
            "key) never reaches the others"
        )
    if settings.local_model:
        problems.append(
            "--no-local-model: each worker would start its own copy of the bundled model "
            "server; run model servers once and add them as providers"
        )
    if problems:
        raise fail(
            f"--workers {workers} needs " + "; and ".join(problems) + ". To scale out, set "
            "KEEL_REDIS_URL=redis://HOST:6379/0 so the workers share limits and change "
            "events, or run several 'keel serve' replicas behind a load balancer, all with "
            "the same KEEL_REDIS_URL and KEEL_DATABASE_URL; or leave --workers at 1.",
            2,
        )


def _serve_workers(
    settings: Settings, workers: int, config: Path | None, flags: Mapping[str, object]
) -> None:
    """Serve with `workers` uvicorn processes, each building its app from the same settings."""
    _prepare_data(settings)
    given = {name: str(v) if isinstance(v, Path) else v for name, v in flags.items()}
    spec = {"config": str(config) if config else None, "flags": given}
    os.environ[_WORKER_SPEC] = json.dumps(spec)  # inherited by the worker processes
    console.print(f"[dim]starting {workers} worker processes on {settings.host}:{settings.port}[/]")
    uvicorn.run(
        f"{__name__}:worker_app",
        factory=True,
        workers=workers,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        # By name: the workers are spawned, so what they run must be importable.
        http=f"{__name__}:WorkerProtocol",
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
        # uvicorn kills a worker that does not answer its health check in time (5 s by
        # default); a worker still starting on a busy machine is not hung.
        timeout_worker_healthcheck=30,
    )


class WorkerProtocol(HeaderDeadline):
    """The HTTP protocol of a worker process; worker_app() sets its header deadline."""


def _prepare_data(settings: Settings) -> None:
    """Migrate the store and create the first admin key once, before the workers start:
    started together on an empty data dir, they would race each other through both."""
    from keel.auth.keys import KeyService
    from keel.store import migrate
    from keel.store.db import Database

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.effective_database_url)
    try:
        migrate.upgrade(database)
        key = KeyService(database).bootstrap_admin(settings.data_dir)
    finally:
        database.dispose()
    if key:
        _show_admin_key(key, settings.data_dir / "admin.key")


def worker_app() -> FastAPI:
    """One worker's app, from what `keel serve` was given (uvicorn imports it by name)."""
    from keel.server.app import create_app

    spec = json.loads(os.environ[_WORKER_SPEC])
    config = Path(spec["config"]) if spec["config"] else None
    loaded = load_settings(config_file=config, cli=spec["flags"])
    settings = loaded.settings
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    os.umask(0o077)
    WorkerProtocol.header_timeout = settings.request_header_timeout  # this process's only
    # Each worker applies the declarations; a lock in the data dir makes them take turns,
    # so the first applies and the others find nothing to change.
    declarations = loaded.config_file if loaded.declarations else None
    return create_app(settings, declarations=declarations)
