"""`keel guard …`: guard policies, where they apply, and a scan to try one on a text."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from keel.cli.client import Api, ConfigOption, KeyOption, UrlOption, fail

app = typer.Typer(help="Guardrails: policies, attachments and test scans.", no_args_is_help=True)
out = Console()


@app.command("list")
def list_policies(
    url: UrlOption = None, key: KeyOption = None, config: ConfigOption = None
) -> None:
    """List the policies this project can use, and where they are attached."""
    api = Api(url, key, config)
    policies = api.call("GET", "/api/guard/policies")["data"]
    table = Table("policy", "kind", "input scanners", "output scanners")
    for p in policies:
        spec = p["spec"]
        table.add_row(p["name"], "built in" if p["builtin"] else "custom",
                      ", ".join(s["type"] for s in spec.get("input", [])),
                      ", ".join(s["type"] for s in spec.get("output", [])))  # fmt: skip
    out.print(table)
    attached = api.call("GET", "/api/guard/attachments")["data"]
    if attached:
        table = Table("scope", "target", "policy")
        for a in attached:
            table.add_row(a["scope"], a["target"] or "", a["policy"])
        out.print(table)


@app.command("set")
def set_policy(
    name: Annotated[str, typer.Argument(help="Policy name.")],
    file: Annotated[Path, typer.Option("-f", "--file", help="Policy spec (YAML or JSON).")],
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Create or replace a custom policy from a file (see docs/guardrails.md)."""
    try:
        spec = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise fail(f"cannot read {file}: {exc}") from exc
    if not isinstance(spec, dict):
        raise fail(f"{file} must hold a mapping with 'input' and/or 'output' scanners")
    saved = Api(url, key, config).call("PUT", f"/api/guard/policies/{name}", spec)
    out.print(f"policy [bold]{saved['name']}[/] saved")


@app.command("attach")
def attach(
    policy: Annotated[str, typer.Argument(help="Policy name; 'none' turns the guard off.")],
    route: Annotated[str | None, typer.Option(help="Attach to this route.")] = None,
    api_key_id: Annotated[str | None, typer.Option("--key-id", help="Attach to this key.")] = None,
    detach: Annotated[bool, typer.Option(help="Remove the attachment instead.")] = False,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Attach a policy to the project (default), a route (--route) or a key (--key-id)."""
    if route and api_key_id:
        raise fail("give --route or --key-id, not both")
    scope = "route" if route else "key" if api_key_id else "project"
    body = {"scope": scope, "target": route or api_key_id, "policy": None if detach else policy}
    saved = Api(url, key, config).call("PUT", "/api/guard/attachments", body)
    where = f"{scope} {saved['target']}" if saved["target"] else "the project"
    out.print(f"{where}: {saved['policy'] or 'no attachment'}")


@app.command("scan")
def scan(
    text: Annotated[str, typer.Argument(help="Text to scan ('-' reads standard input).")],
    policy: Annotated[str, typer.Option(help="Policy to run.")] = "default",
    output: Annotated[bool, typer.Option(help="Scan as model output, not input.")] = False,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Run a policy over a text and show each scanner's verdict (nothing goes to a model)."""
    if text == "-":
        text = typer.get_text_stream("stdin").read()
    body: dict[str, Any] = {"policy": policy, "text": text,
                            "direction": "output" if output else "input"}  # fmt: skip
    result = Api(url, key, config).call("POST", "/api/guard/scan", body)
    table = Table("scanner", "action", "score", "ms", "found")
    for v in result["verdicts"]:
        found = ", ".join(sorted({f["kind"] for f in v["findings"]}))
        table.add_row(v["scanner"], v["action"], f"{v['score']:.3f}", f"{v['latency_ms']:.1f}",
                      found)  # fmt: skip
    out.print(table)
    verdict = "[red]blocked[/]" if result["blocked"] else f"[green]{result['action']}[/]"
    out.print(f"policy {result['policy']}: {verdict}")
    if not result["blocked"] and result["text"] != text:
        out.print(result["text"])
