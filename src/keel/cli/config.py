"""`keel config`: the effective settings and where each value came from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from keel.cli.client import fail
from keel.settings import SettingsError, describe, load_settings

app = typer.Typer(help="Inspect Keel's settings.", no_args_is_help=True)


@app.command("show")
def show(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="keel.yaml.")] = None,
) -> None:
    """Print every setting's effective value and source (default, file, env); secrets masked."""
    try:
        loaded = load_settings(config_file=config)
    except SettingsError as exc:
        raise fail(str(exc), 2) from exc
    table = Table("setting", "value", "source", "help", title="Keel settings")
    for name, value, source, help_text in describe(loaded):
        style = "bold" if source != "default" else ""
        table.add_row(name, value, source, help_text, style=style)
    console = Console()
    console.print(table)
    console.print(f"config file: {loaded.config_file or '(none)'}")
    if loaded.declarations:
        console.print(
            f"declarations in it: {', '.join(loaded.declarations)} (applied by 'keel serve' "
            "at start and by 'keel apply -f'; not settings)"
        )
