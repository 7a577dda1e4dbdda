"""`keel export`: the registry's current state as a keel.yaml that `keel apply` accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from keel.cli.client import Api, ConfigOption, KeyOption, UrlOption

SPEC_FIELDS = ("name", "provider", "upstream_model", "params", "context_window",
               "input_price_per_m", "output_price_per_m", "tags")  # fmt: skip
ROUTE_FIELDS = ("name", "targets", "sticky", "fallbacks", "timeout", "retries")


def env_name(provider: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in provider).upper() + "_API_KEY"


def export_state(api: Api) -> dict[str, Any]:
    providers = []
    for p in api.call("GET", "/api/providers"):
        entry: dict[str, Any] = {"name": p["name"], "kind": p["kind"]}
        if p["base_url"]:
            entry["base_url"] = p["base_url"]
        if p["has_api_key"]:
            entry["api_key"] = {"$env": env_name(p["name"])}  # the key itself never leaves
        if p["config"]:
            entry["config"] = p["config"]
        providers.append(entry)
    models = [{k: m[k] for k in SPEC_FIELDS} for m in api.call("GET", "/api/models")]
    routes = [{k: r[k] for k in ROUTE_FIELDS} for r in api.call("GET", "/api/routes")]
    deployments = [
        {"model": d["model"], "replicas": d["replicas"]}
        for d in api.call("GET", "/api/deployments")
    ]
    return {"providers": providers, "models": models, "routes": routes, "deployments": deployments}


def export(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write.")] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Write providers, model versions, routes and deployments as YAML for `keel apply`."""
    text = yaml.safe_dump(export_state(Api(url, key, config)), sort_keys=False)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        typer.echo(f"wrote {output}", err=True)
