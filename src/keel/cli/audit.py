"""`keel audit tail`: the audit log as it grows, in a live table."""

from __future__ import annotations

import json
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


def _changes(before: Any, after: Any) -> tuple[str, str]:
    """What changed, as (before, after): only the fields that differ, when both are records."""
    if isinstance(before, dict) and isinstance(after, dict):
        keys = [k for k in {**before, **after} if before.get(k) != after.get(k)]
        keys = [k for k in keys if k not in ("revision", "updated_at")] or keys
        return (
            _brief({k: before.get(k) for k in keys}, 50),
            _brief({k: after.get(k) for k in keys}, 50),
        )
    return _brief(before, 50), _brief(after, 50)


def _table(entries: list[dict[str, Any]]) -> Table:
    table = Table("id", "at", "actor", "ip", "action", "target", "before", "after")
    for e in entries:
        before, after = _changes(e["before"], e["after"])
        table.add_row(str(e["id"]), e["at"][:19], e["actor"], e.get("ip") or "", e["action"],
                      f"{e['target_type']}:{e['target_id']}", before, after)  # fmt: skip
    return table


def _print_json(entries: list[dict[str, Any]]) -> None:
    for entry in entries:  # one record per line, whole (before and after included)
        print(json.dumps(entry, sort_keys=True), flush=True)


@app.command("tail")
def tail(
    lines: Annotated[int, typer.Option("-n", help="Records to show first.")] = 20,
    follow: Annotated[bool, typer.Option(help="Keep watching for new records.")] = True,
    interval: Annotated[float, typer.Option(help="Seconds between polls.")] = 1.0,
    action: Annotated[str | None, typer.Option(help="Only this action.")] = None,
    target_type: Annotated[str | None, typer.Option(help="Only this target type.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON record per line, before and after whole.")
    ] = False,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Show the newest audit records (what changed: before and after), then new ones as
    they come (Ctrl-C stops)."""
    api = Api(url, key, config)
    filters = {"action": action, "target_type": target_type}
    page = api.call("GET", "/api/audit", limit=str(max(1, min(lines, 1000))), **filters)
    shown: list[dict[str, Any]] = list(reversed(page["data"]))
    if as_json:
        _print_json(shown)
    elif not follow:
        out.print(_table(shown))
    if not follow:
        return
    last = shown[-1]["id"] if shown else 0
    if as_json:
        try:
            while True:
                time.sleep(interval)
                newer = api.call("GET", "/api/audit", after=str(last), limit="1000", **filters)
                if newer["data"]:
                    fresh = list(reversed(newer["data"]))
                    _print_json(fresh)
                    last = fresh[-1]["id"]
        except KeyboardInterrupt:
            pass
        return
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
