"""`keel export`: the registry's current state as a keel.yaml that `keel apply` accepts.

Everything apply reads is written (providers, model versions, routes, deployments,
prompts), so applying an export to the same Keel changes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
import yaml

from keel.cli.client import Api, ConfigOption, KeyOption, UrlOption, err

SPEC_FIELDS = ("name", "provider", "upstream_model", "params", "context_window",
               "input_price_per_m", "output_price_per_m", "tags")  # fmt: skip
ROUTE_FIELDS = ("name", "targets", "sticky", "fallbacks", "timeout", "retries")
ROUTE_OPTIONAL = ("breaker_failures", "breaker_cooldown")  # written only when set
PROMPT_FIELDS = ("messages", "variables", "allow_extra_variables", "config")
LATEST = "latest"


def export_state(api: Api) -> dict[str, Any]:
    providers = []
    for p in api.call("GET", "/api/providers"):
        entry: dict[str, Any] = {"name": p["name"], "kind": p["kind"]}
        if p["base_url"]:
            entry["base_url"] = p["base_url"]
        if p.get("api_key_env"):
            entry["api_key"] = {"$env": p["api_key_env"]}  # read by the server, as before
        elif p["has_api_key"]:
            # A key stored encrypted has no name to write; apply keeps it while the entry
            # has no api_key, so the export still applies as no change.
            err.print(
                f"note: provider {p['name']!r} has a key stored encrypted, which is never "
                "exported; its entry has no api_key (write api_key: {$env: NAME} to declare one)"
            )
        if p["config"]:
            entry["config"] = p["config"]
        providers.append(entry)
    models = [{k: m[k] for k in SPEC_FIELDS} for m in api.call("GET", "/api/models")]
    routes = []
    for r in api.call("GET", "/api/routes"):
        route = {k: r[k] for k in ROUTE_FIELDS}
        route.update({k: r[k] for k in ROUTE_OPTIONAL if r.get(k) is not None})
        routes.append(route)
    deployments = [
        # `on` only when not the default, so exports of local deployments read as before
        {"model": d["model"], "replicas": d["replicas"]}
        | ({"on": d["on"]} if d.get("on", "local") != "local" else {})
        for d in api.call("GET", "/api/deployments")
    ]
    return {
        "providers": providers,
        "models": models,
        "routes": routes,
        "deployments": deployments,
        "prompts": export_prompts(api),
    }


def export_prompts(api: Api) -> list[dict[str, Any]]:
    """Each prompt's newest version, with its labels (`latest` for those on the newest)."""
    prompts = []
    for summary in api.call("GET", "/api/prompts")["data"]:
        name, newest = summary["name"], summary["latest_version"]
        version = api.call("GET", f"/api/prompts/{quote(name, safe='')}", version=str(newest))
        entry: dict[str, Any] = {"name": name}
        entry.update({k: version[k] for k in PROMPT_FIELDS if version.get(k) not in (None, {}, [])})
        labels = {
            label: LATEST if number == newest else number
            for label, number in sorted(summary["labels"].items())
            if label != LATEST
        }
        if labels:
            entry["labels"] = labels
        prompts.append(entry)
    return prompts


def export(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write.")] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Write providers, model versions, routes, deployments and prompts as YAML for
    `keel apply` (keys as {$env: NAME} references; a key stored encrypted is left out)."""
    text = yaml.safe_dump(export_state(Api(url, key, config)), sort_keys=False)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        typer.echo(f"wrote {output}", err=True)
