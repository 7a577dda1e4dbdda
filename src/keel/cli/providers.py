"""`keel providers`: where models run (OpenAI-compatible servers, Anthropic, local GGUF)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from keel.cli.client import Api, ConfigOption, KeyOption, UrlOption

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
        str | None,
        typer.Option(help="Environment variable of the Keel server that holds the upstream key."),
    ] = None,
    model_path: Annotated[
        str | None, typer.Option(help="local: a .gguf file, or bundled:smollm2.")
    ] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Create or update a provider. Keys are never typed inline: --api-key-env names a
    variable that the Keel server reads from its own environment (as `api_key: {$env: X}`
    in keel.yaml does), so it must be set where `keel serve` runs."""
    body = {"kind": kind, "base_url": base_url, "api_key_env": api_key_env,
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


@app.command("delete")
def delete_provider(
    name: Annotated[str, typer.Argument(help="Provider name.")],
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Delete a provider that no model version uses (else: which versions do)."""
    Api(url, key, config).call("DELETE", f"/api/providers/{name}")
    out.print(f"deleted provider [bold]{name}[/]")
