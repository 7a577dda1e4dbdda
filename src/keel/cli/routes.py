"""`keel routes`: what clients send as `model`, with canary splits, promotion and rollback."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from keel.cli.client import Api, ConfigOption, KeyOption, UrlOption, fail
from keel.registry.specs import check_weights

app = typer.Typer(help="Routes: weighted splits over model versions.", no_args_is_help=True)
out = Console()


def parse_split(pairs: list[str]) -> dict[str, int]:
    """['smollm2@1=90', 'smollm2@2=10'] → {'smollm2@1': 90, 'smollm2@2': 10}.

    The syntax is checked here, the numbers by the rule every split follows (the same
    message as the API's): a negative weight is blamed on the number, not the syntax.
    """
    split: dict[str, int] = {}
    for pair in pairs:
        ref, sep, weight = pair.partition("=")
        try:
            number = int(weight.strip())
        except ValueError:
            number = None
        if not sep or not ref.strip() or number is None:
            raise fail(f"{pair!r} is not version=weight, e.g. smollm2@1=90", 2)
        split[ref.strip()] = number
    try:
        check_weights(split)
    except ValueError as exc:
        raise fail(str(exc), 2) from exc
    return split


def _split_text(targets: dict[str, int]) -> str:
    total = sum(targets.values()) or 1
    return "  ".join(f"{ref} {100 * w / total:.0f}%" for ref, w in targets.items())


def _print_route(route: dict[str, Any]) -> None:
    out.print(f"[bold]{route['name']}[/] (revision {route['revision']}): "
              f"{_split_text(route['targets'])}")  # fmt: skip


def _health_table(route: dict[str, Any]) -> Table:
    table = Table("target", "weight", "health", "breaker", "failures/min", "last error",
                  title="Targets")  # fmt: skip
    for ref, info in route.get("health", {}).items():
        weight = route["targets"].get(ref)
        health = "[green]healthy[/]" if info["healthy"] else "[bold red]unhealthy[/]"
        table.add_row(ref, "fallback" if weight is None else str(weight), health,
                      info["state"].replace("_", "-"), str(info["failures_per_minute"]),
                      escape(info["last_error"] or "-"))  # fmt: skip
    return table


@app.command("list")
def list_routes(url: UrlOption = None, key: KeyOption = None, config: ConfigOption = None) -> None:
    """List routes and their current split."""
    table = Table("route", "split", "sticky", "fallbacks", "revision")
    for r in Api(url, key, config).call("GET", "/api/routes"):
        table.add_row(r["name"], _split_text(r["targets"]), r["sticky"] or "-",
                      ", ".join(r["fallbacks"]) or "-", str(r["revision"]))  # fmt: skip
    out.print(table)


@app.command("add")
def add_route(
    name: Annotated[str, typer.Argument(help="Route name (what clients send as model).")],
    split: Annotated[list[str], typer.Argument(help="version=weight pairs, e.g. smollm2@1=100.")],
    fallback: Annotated[
        list[str] | None, typer.Option(help="Fallback version (repeatable).")
    ] = None,
    sticky: Annotated[str | None, typer.Option(help="key or user.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds per attempt.")] = None,
    retries: Annotated[int, typer.Option(help="Extra attempts after the first.")] = 2,
    breaker_failures: Annotated[
        int | None,
        typer.Option(help="Consecutive failures that open this route's breaker of a target."),
    ] = None,
    breaker_cooldown: Annotated[
        float | None, typer.Option(help="Seconds this route's open breaker waits for a probe.")
    ] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Create or replace a route. Weights are relative: each target gets weight / (sum of
    the weights) of the traffic, so 90 and 10 make 90 % and 10 %, as do 9 and 1."""
    body = {"targets": parse_split(split), "fallbacks": fallback or [], "sticky": sticky,
            "timeout": timeout, "retries": retries, "breaker_failures": breaker_failures,
            "breaker_cooldown": breaker_cooldown}  # fmt: skip
    result = Api(url, key, config).call("PUT", f"/api/routes/{name}", body)
    _print_route(result["data"])


@app.command("show")
def show_route(
    name: Annotated[str, typer.Argument(help="Route name.")],
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Show a route, each target's health (breaker, failures per minute, last error) and
    the route's revision history."""
    route = Api(url, key, config).call("GET", f"/api/routes/{name}")
    _print_route(route)
    out.print(_health_table(route))
    table = Table("revision", "split", "by", "at", "rolled back")
    for h in route["history"]:
        table.add_row(str(h["revision"]), _split_text(h["targets"]), h["actor"], h["at"],
                      "yes" if h["reverted"] else "")  # fmt: skip
    out.print(table)


@app.command("set-split")
def set_split(
    name: Annotated[str, typer.Argument(help="Route name.")],
    split: Annotated[list[str], typer.Argument(help="version=weight pairs.")],
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Set a route's weighted split, e.g. `keel routes set-split chat smollm2@1=90 smollm2@2=10`."""
    body = {"targets": parse_split(split)}
    _print_route(Api(url, key, config).call("POST", f"/api/routes/{name}/split", body)["data"])


@app.command("promote")
def promote(
    name: Annotated[str, typer.Argument(help="Route name.")],
    model: Annotated[str, typer.Argument(help="Model version that takes all traffic.")],
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Send 100% of a route's traffic to one model version."""
    body = {"model": model}
    _print_route(Api(url, key, config).call("POST", f"/api/routes/{name}/promote", body)["data"])


@app.command("rollback")
def rollback(
    name: Annotated[str, typer.Argument(help="Route name.")],
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Restore the route's previous split (from its history)."""
    _print_route(Api(url, key, config).call("POST", f"/api/routes/{name}/rollback")["data"])


@app.command("delete")
def delete_route(
    name: Annotated[str, typer.Argument(help="Route name.")],
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Delete a route and its history (clients sending its name get 404 from then on)."""
    Api(url, key, config).call("DELETE", f"/api/routes/{name}")
    out.print(f"deleted route [bold]{name}[/]")
