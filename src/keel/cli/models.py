"""`keel models`: model versions in the registry, and the model ids clients can send."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from keel.cli.client import Api, ConfigOption, KeyOption, UrlOption, fail

app = typer.Typer(help="Model versions (immutable) in the registry.", no_args_is_help=True)
out = Console()


def _json_option(value: str | None, what: str) -> dict[str, object]:
    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise fail(f"{what} must be a JSON object: {exc}", 2) from exc
    if not isinstance(parsed, dict):
        raise fail(f"{what} must be a JSON object", 2)
    return parsed


@app.command("list")
def list_models(url: UrlOption = None, key: KeyOption = None, config: ConfigOption = None) -> None:
    """List model versions, and every model id clients can send to /v1."""
    api = Api(url, key, config)
    table = Table("version", "provider", "upstream model", "$/1M in", "$/1M out", "tags",
                  title="Model versions")  # fmt: skip
    for m in api.call("GET", "/api/models"):
        table.add_row(m["ref"], m["provider"], m["upstream_model"], f"{m['input_price_per_m']:g}",
                      f"{m['output_price_per_m']:g}", ", ".join(m["tags"]))  # fmt: skip
    out.print(table)
    served = Table("model id", "owned by", title="Served on /v1 (routes, versions, embeddings)")
    for card in api.call("GET", "/v1/models")["data"]:
        served.add_row(card["id"], card["owned_by"])
    out.print(served)


@app.command("add")
def add_model(
    name: Annotated[str, typer.Argument(help="Model name; the version number is assigned.")],
    provider: Annotated[str, typer.Option(help="Provider that serves it.")],
    upstream_model: Annotated[str, typer.Option(help="Model id at the provider.")],
    params: Annotated[
        str | None, typer.Option(help="Default params as JSON, e.g. '{\"temperature\": 0.2}'.")
    ] = None,
    context_window: Annotated[int | None, typer.Option(help="Context window in tokens.")] = None,
    input_price: Annotated[float, typer.Option(help="Price per 1M input tokens.")] = 0.0,
    output_price: Annotated[float, typer.Option(help="Price per 1M output tokens.")] = 0.0,
    tag: Annotated[list[str] | None, typer.Option(help="A tag (repeatable).")] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Add a new immutable version of a model (name@N)."""
    body = {
        "name": name, "provider": provider, "upstream_model": upstream_model,
        "params": _json_option(params, "--params"), "context_window": context_window,
        "input_price_per_m": input_price, "output_price_per_m": output_price, "tags": tag or [],
    }  # fmt: skip
    result = Api(url, key, config).call("POST", "/api/models", body)
    verb = "added" if result["changed"] else "unchanged (same as the newest version):"
    out.print(f"{verb} [bold]{result['data']['ref']}[/]")


@app.command("show")
def show_model(
    ref: Annotated[str, typer.Argument(help="Model version, e.g. smollm2@1.")],
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Show one model version."""
    out.print_json(data=Api(url, key, config).call("GET", f"/api/models/{ref}"))


@app.command("delete")
def delete_model(
    ref: Annotated[str, typer.Argument(help="Model version, e.g. smollm2@2.")],
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Delete a model version that no route and no deployment uses (else: which do)."""
    Api(url, key, config).call("DELETE", f"/api/models/{ref}")
    out.print(f"deleted model version [bold]{ref}[/]")
