"""`keel prompts`: push versions, move labels, diff, render previews and archive prompts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from keel.cli.apply import run_apply
from keel.cli.client import (
    connection_hint,
    describe_http_error,
    fail,
    resolve_target_and_source,
)
from keel.gitops.apply import ApplyOptions
from keel.prompts.spec import PromptContent, dump_yaml

app = typer.Typer(
    help="Versioned prompts: push, list, show, diff, label, render, archive.",
    no_args_is_help=True,
)
out = Console(highlight=False, soft_wrap=True)

Url = Annotated[str | None, typer.Option(help="Keel base URL (default from settings).")]
Key = Annotated[str | None, typer.Option(help="API key (default: the local admin key).")]
Config = Annotated[Path | None, typer.Option("--config", "-c", help="keel.yaml.")]
Name = Annotated[str, typer.Argument(help="Prompt name, e.g. support-reply.")]
VersionOpt = Annotated[int | None, typer.Option("--version", help="Version number.")]
LabelOpt = Annotated[str | None, typer.Option("--label", help="Label (default: production).")]


def _api(
    method: str,
    path: str,
    target: tuple[str | None, str | None, Path | None],
    *,
    json_body: Any = None,
    params: dict[str, Any] | None = None,
) -> Any:
    base, token, source = resolve_target_and_source(*target)
    try:
        response = httpx.request(
            method,
            f"{base}/api/prompts{path}",
            json=json_body,
            params={k: v for k, v in (params or {}).items() if v is not None},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
    except httpx.HTTPError as exc:
        raise fail(connection_hint(base, exc)) from exc
    if response.status_code >= 400:
        raise fail(escape(describe_http_error(response, source)))
    return response.json()


def _name(name: str) -> str:
    return "/" + quote(name, safe="")


def _check_pointer(version: int | None, label: str | None) -> None:
    if version is not None and label is not None:
        raise fail("give --version or --label, not both")


@app.command()
def push(
    file: Annotated[Path, typer.Argument(help="YAML file with one prompt (or several).")],
    message: Annotated[
        str | None, typer.Option("--message", "-m", help="Commit message: why this version.")
    ] = None,
    url: Url = None,
    key: Key = None,
    config: Config = None,
) -> None:
    """Create a new version from FILE; nothing is created when the content is unchanged.

    Labels written in the file are left alone: move them with 'keel prompts label' or
    'keel apply'.
    """
    outcomes = run_apply(
        [file], url, key, config, options=ApplyOptions(message=message, labels=False)
    )
    for outcome in outcomes:
        out.print(escape(f"{outcome.name}: {outcome.detail}"))


@app.command("list")
def list_prompts(
    all_: Annotated[bool, typer.Option("--all", help="Include archived prompts.")] = False,
    url: Url = None,
    key: Key = None,
    config: Config = None,
) -> None:
    """List the project's prompts with their newest version and labels."""
    found = _api("GET", "", (url, key, config), params={"include_archived": all_})
    table = Table("prompt", "latest", "labels", "updated")
    for prompt in found["data"]:
        labels = ", ".join(
            f"{label}={version}" for label, version in sorted(prompt["labels"].items())
        )
        name = prompt["name"] + (" (archived)" if prompt["archived"] else "")
        table.add_row(name, str(prompt["latest_version"]), labels, prompt["updated_at"][:19])
    out.print(table)


@app.command()
def versions(name: Name, url: Url = None, key: Key = None, config: Config = None) -> None:
    """List a prompt's versions, newest first, with their labels and messages."""
    found = _api("GET", f"{_name(name)}/versions", (url, key, config))
    table = Table("version", "labels", "message", "author", "created")
    for version in found["data"]:
        table.add_row(
            str(version["version"]),
            ", ".join(version["labels"]),
            version["message"],
            version["author"],
            version["created_at"][:19],
        )
    out.print(table)


@app.command()
def show(
    name: Name,
    version: VersionOpt = None,
    label: LabelOpt = None,
    url: Url = None,
    key: Key = None,
    config: Config = None,
) -> None:
    """Print a version as YAML (by default the one labelled production).

    The output can be edited and pushed again.
    """
    _check_pointer(version, label)
    found = _api(
        "GET", _name(name), (url, key, config), params={"version": version, "label": label}
    )
    content = PromptContent.model_validate(
        {k: found[k] for k in ("messages", "variables", "allow_extra_variables", "config")}
    )
    header = (
        f"# {found['name']} version {found['version']}"
        f" (labels: {', '.join(found['labels']) or 'none'})\n"
        f"# by {found['author']} at {found['created_at'][:19]}: {found['message']}\n"
    )
    typer.echo(header + dump_yaml({"name": found["name"]}) + content.to_yaml(), nl=False)


@app.command()
def diff(
    name: Name,
    old: Annotated[int, typer.Argument(help="The older version.", min=1)],
    new: Annotated[int, typer.Argument(help="The newer version.", min=1)],
    url: Url = None,
    key: Key = None,
    config: Config = None,
) -> None:
    """Show what changed between two versions (messages, variables, config)."""
    found = _api("GET", f"{_name(name)}/diff", (url, key, config), params={"from": old, "to": new})
    if not found["diff"]:
        out.print(f"versions {old} and {new} are identical")
        return
    for line in found["diff"].splitlines():
        style = ""
        if line.startswith(("+++", "---")):
            style = "bold"
        elif line.startswith("+"):
            style = "green"
        elif line.startswith("-"):
            style = "red"
        elif line.startswith("@@"):
            style = "cyan"
        out.print(Text(line, style=style))


@app.command()
def label(
    name: Name,
    label_name: Annotated[str, typer.Argument(metavar="LABEL", help="e.g. production.")],
    version: Annotated[int, typer.Argument(help="Version the label points at.", min=1)],
    url: Url = None,
    key: Key = None,
    config: Config = None,
) -> None:
    """Point LABEL at VERSION (a rollback is moving it back)."""
    moved = _api(
        "PUT",
        f"{_name(name)}/labels/{quote(label_name, safe='')}",
        (url, key, config),
        json_body={"version": version},
    )
    previous = moved["previous_version"]
    if previous == version:
        out.print(escape(f"{name}: {label_name} already points at version {version}"))
    else:
        start = "unset" if previous is None else str(previous)
        out.print(escape(f"{name}: {label_name} {start} → {version}"))


def _coerce(assignments: list[str], schema: dict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise fail(f"-v takes key=value (got {item!r})")
        kind = schema.get(key, "string")
        if kind == "string":
            values[key] = raw
            continue
        try:
            values[key] = json.loads(raw)
        except ValueError as exc:
            raise fail(f"variable {key!r} is {kind}; give it as JSON, e.g. -v {key}=3") from exc
    return values


@app.command()
def render(
    name: Name,
    var: Annotated[
        list[str] | None, typer.Option("--var", "-v", help="A variable as key=value; repeat.")
    ] = None,
    version: VersionOpt = None,
    label: LabelOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    url: Url = None,
    key: Key = None,
    config: Config = None,
) -> None:
    """Preview the messages a version renders to (default: the production label).

    Values of string variables are taken as written; others are read as JSON.
    """
    _check_pointer(version, label)
    target = (url, key, config)
    found = _api("GET", _name(name), target, params={"version": version, "label": label})
    schema = {v["name"]: v["type"] for v in found["variables"]}
    body = {"version": found["version"], "variables": _coerce(var or [], schema)}
    rendered = _api("POST", f"{_name(name)}/render", target, json_body=body)
    if as_json:
        typer.echo(json.dumps(rendered, indent=2))
        return
    out.print(f"[dim]{escape(name)} version {rendered['version']}[/]")
    for message in rendered["messages"]:
        out.print(Text(f"{message['role']}:", style="bold"))
        out.print(Text(message["content"]))


@app.command()
def archive(name: Name, url: Url = None, key: Key = None, config: Config = None) -> None:
    """Archive a prompt: hidden from lists, refused by the gateway; pushing restores it."""
    _api("POST", f"{_name(name)}/archive", (url, key, config))
    out.print(escape(f"archived {name}; push a new version to restore it"))
