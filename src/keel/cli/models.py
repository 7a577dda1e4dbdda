"""`keel models`: what models a running Keel serves."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table

from keel.cli.client import connection_hint, describe_http_error, fail, resolve_target

app = typer.Typer(help="Models served by Keel.", no_args_is_help=True)


@app.command("list")
def list_models(
    url: Annotated[str | None, typer.Option(help="Keel base URL (default from settings).")] = None,
    key: Annotated[str | None, typer.Option(help="API key (default: the local admin key).")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="keel.yaml.")] = None,
) -> None:
    """List the model ids clients can send, and who serves each."""
    base, token = resolve_target(url, key, config)
    try:
        response = httpx.get(
            f"{base}/v1/models", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
    except httpx.HTTPError as exc:
        raise fail(connection_hint(base, exc)) from exc
    if response.status_code != 200:
        raise fail(describe_http_error(response))
    table = Table("model", "owned by")
    for card in response.json()["data"]:
        table.add_row(card["id"], card["owned_by"])
    Console().print(table)
