"""`keel audit tail`: the audit log as it grows, in a live table."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from keel.cli.client import Api, ConfigOption, KeyOption, UrlOption

app = typer.Typer(help="The audit log: every control-plane change.", no_args_is_help=True)
out = Console()


def _brief(value: Any, width: int = 60) -> str:
    if value is None:
        return ""
    text = str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(entries: list[dict[str, Any]]) -> Table:
    table = Table("id", "at", "actor", "ip", "action", "target", "after")
    for e in entries:
        table.add_row(str(e["id"]), e["at"][:19], e["actor"], e.get("ip") or "", e["action"],
                      f"{e['target_type']}:{e['target_id']}", _brief(e["after"]))  # fmt: skip
    return table


@app.command("tail")
def tail(
    lines: Annotated[int, typer.Option("-n", help="Records to show first.")] = 20,
    follow: Annotated[bool, typer.Option(help="Keep watching for new records.")] = True,
    interval: Annotated[float, typer.Option(help="Seconds between polls.")] = 1.0,
    action: Annotated[str | None, typer.Option(help="Only this action.")] = None,
    target_type: Annotated[str | None, typer.Option(help="Only this target type.")] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Show the newest audit records, then new ones as they come (Ctrl-C stops)."""
    api = Api(url, key, config)
    filters = {"action": action, "target_type": target_type}
    page = api.call("GET", "/api/audit", limit=str(max(1, min(lines, 1000))), **filters)
    shown: list[dict[str, Any]] = list(reversed(page["data"]))
    if not follow:
        out.print(_table(shown))
        return
    last = shown[-1]["id"] if shown else 0
    try:
        with Live(_table(shown), console=out, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                newer = api.call("GET", "/api/audit", after=str(last), limit="1000", **filters)
                if newer["data"]:
                    shown = (shown + list(reversed(newer["data"])))[-max(lines, 1) :]
                    last = shown[-1]["id"]
                    live.update(_table(shown), refresh=True)
    except KeyboardInterrupt:
        pass
