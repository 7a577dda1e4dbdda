"""`keel serve`: start the gateway and its local model servers in the foreground."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from rich.console import Console
from rich.panel import Panel

from keel.cli.client import fail
from keel.deploy.bundled import BundledModelMissing
from keel.deploy.llamacpp import ModelServerFailed
from keel.settings import SettingsError, load_settings

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
        settings = load_settings(config_file=config, cli=flags).settings
    except SettingsError as exc:
        raise fail(str(exc), 2) from exc
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # Everything Keel and its model servers write (database, spill files, logs) holds
    # prompts and answers: readable by this user only, whatever the shell's umask.
    os.umask(0o077)
    from keel.server.app import create_app
    from keel.server.protocol import http_protocol

    progress = _StartupProgress()
    app = create_app(settings, on_admin_key=_show_admin_key, progress=progress)
    progress(
        f"data in {settings.data_dir}; database {settings.effective_database_url.split('://')[0]}"
    )
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
