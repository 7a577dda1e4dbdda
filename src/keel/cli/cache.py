"""`keel cache stats|purge`: the response cache of your project on a running Keel."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from keel.cli.client import Api, ConfigOption, KeyOption, UrlOption, fail

app = typer.Typer(help="The response cache: statistics and purging.", no_args_is_help=True)
out = Console()


@app.command("stats")
def stats(url: UrlOption = None, key: KeyOption = None, config: ConfigOption = None) -> None:
    """Entries, bytes, hits (exact, semantic), misses and evictions of your project."""
    numbers = Api(url, key, config).call("GET", "/api/cache/stats")
    lookups = numbers["hits_exact"] + numbers["hits_semantic"] + numbers["misses"]
    hits = numbers["hits_exact"] + numbers["hits_semantic"]
    table = Table("what", "value", title=f"Cache ({numbers['backend']})")
    for name in ("entries", "bytes", "hits_exact", "hits_semantic", "misses", "evictions"):
        table.add_row(name, f"{numbers[name]:,}")
    table.add_row("hit rate", f"{hits / lookups:.1%}" if lookups else "-")
    out.print(table)


@app.command("purge")
def purge(
    route: Annotated[str | None, typer.Option(help="Only answers of this route.")] = None,
    prompt: Annotated[
        str | None, typer.Option(help="Only answers made with this prompt: NAME or NAME@VERSION.")
    ] = None,
    entry: Annotated[str | None, typer.Option(help="Only this entry id.")] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="Purge every answer of the project (no filter).")
    ] = False,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Delete cached answers of your project; filters given must all match."""
    if not (route or prompt or entry or everything):
        raise fail("give --route, --prompt or --entry, or --all to purge the whole project's cache")
    body = {"route": route, "prompt": prompt, "entry_id": entry}
    result = Api(url, key, config).call(
        "POST", "/api/cache/purge", {k: v for k, v in body.items() if v is not None}
    )
    out.print(f"purged {result['purged']} cached answer(s)")
