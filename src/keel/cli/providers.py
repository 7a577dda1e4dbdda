"""`keel providers`: where models run (OpenAI-compatible servers, Anthropic, local GGUF)."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from keel.cli.client import Api, ConfigOption, KeyOption, UrlOption, fail

app = typer.Typer(help="Providers: where models run.", no_args_is_help=True)
out = Console()


@app.command("list")
def list_providers(
    url: UrlOption = None, key: KeyOption = None, config: ConfigOption = None
) -> None:
    """List providers (API keys are never shown, only whether one is set)."""
    table = Table("name", "kind", "base url / model path", "api key")
    for p in Api(url, key, config).call("GET", "/api/providers"):
        where = p["base_url"] or str(p["config"].get("model_path", ""))
        table.add_row(p["name"], p["kind"], where, "set" if p["has_api_key"] else "-")
    out.print(table)


@app.command("add")
def add_provider(
    name: Annotated[str, typer.Argument(help="Provider name.")],
    kind: Annotated[str, typer.Option(help="openai_compat, anthropic or local.")],
    base_url: Annotated[str | None, typer.Option(help="API base URL.")] = None,
    api_key_env: Annotated[
        str | None, typer.Option(help="Environment variable holding the upstream's API key.")
    ] = None,
    model_path: Annotated[
        str | None, typer.Option(help="local: a .gguf file, or bundled:smollm2.")
    ] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Create or update a provider. Keys are read from the environment, never typed inline."""
    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if api_key is None:
            raise fail(f"environment variable {api_key_env} is not set", 2)
    body = {"kind": kind, "base_url": base_url, "api_key": api_key,
            "config": {"model_path": model_path} if model_path else {}}  # fmt: skip
    result = Api(url, key, config).call("PUT", f"/api/providers/{name}", body)
    out.print(f"{'saved' if result['changed'] else 'unchanged'}: [bold]{name}[/]")


@app.command("show")
def show_provider(
    name: Annotated[str, typer.Argument(help="Provider name.")],
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Show one provider."""
    out.print_json(data=Api(url, key, config).call("GET", f"/api/providers/{name}"))
