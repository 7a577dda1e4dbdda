"""`keel keys`: create (the key is printed once), list and revoke API keys."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from keel.cli.client import Api, ConfigOption, KeyOption, UrlOption

app = typer.Typer(help="API keys: roles, scopes, limits, revocation.", no_args_is_help=True)
out = Console()

ProjectOption = Annotated[
    str | None, typer.Option(help="Project (default: the calling key's own).")
]
Rpm = Annotated[int | None, typer.Option(help="Requests per minute.")]
Tpm = Annotated[int | None, typer.Option(help="Tokens per minute (input + output).")]
Concurrency = Annotated[int | None, typer.Option(help="Requests in flight at once.")]
BudgetAmount = Annotated[float | None, typer.Option(help="Hard spend limit per period.")]
BudgetSoft = Annotated[float | None, typer.Option(help="Spend that triggers a warning.")]
BudgetPeriod = Annotated[str, typer.Option(help="day or month (UTC).")]


def limits_body(
    rpm: int | None,
    tpm: int | None,
    concurrency: int | None,
    budget: float | None,
    budget_soft: float | None,
    budget_period: str,
) -> dict[str, Any]:
    limits: dict[str, Any] = {"rpm": rpm, "tpm": tpm, "concurrency": concurrency}
    if budget is not None:
        limits["budget"] = {"amount": budget, "soft": budget_soft, "period": budget_period}
    return {k: v for k, v in limits.items() if v is not None}


def _split(values: list[str] | None) -> list[str] | None:
    """Repeated options or comma-separated lists: --routes a,b --routes c → [a, b, c]."""
    if values is None:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _limits_text(limits: dict[str, Any]) -> str:
    parts = [f"{name} {limits[name]}" for name in ("rpm", "tpm", "concurrency") if name in limits]
    if "budget" in limits:
        budget = limits["budget"]
        parts.append(f"budget {budget['amount']}/{budget.get('period', 'month')}")
    return ", ".join(parts) or "-"


def _scopes_text(scopes: dict[str, Any]) -> str:
    parts = [
        f"{name}: {', '.join(scopes[name])}" for name in ("routes", "prompts") if name in scopes
    ]
    if "max_tokens" in scopes:
        parts.append(f"max_tokens {scopes['max_tokens']}")
    return "; ".join(parts) or "-"


@app.command("create")
def create(
    project: ProjectOption = None,
    role: Annotated[
        str | None, typer.Option(help="admin, developer, viewer or app (default app).")
    ] = None,
    name: Annotated[str, typer.Option(help="What the key is for.")] = "api key",
    user: Annotated[str | None, typer.Option(help="A user's key (takes their role).")] = None,
    routes: Annotated[
        list[str] | None, typer.Option(help="Allowed models/routes (repeat or comma-separate).")
    ] = None,
    prompts: Annotated[list[str] | None, typer.Option(help="Allowed stored prompts.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Largest max_tokens per call.")] = None,
    rpm: Rpm = None,
    tpm: Tpm = None,
    concurrency: Concurrency = None,
    budget: BudgetAmount = None,
    budget_soft: BudgetSoft = None,
    budget_period: BudgetPeriod = "month",
    expires_in_days: Annotated[float | None, typer.Option(help="Expire after N days.")] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Create a key and print it once, e.g. `keel keys create --role app --routes chat --rpm 60`."""
    scopes = {"routes": _split(routes), "prompts": _split(prompts), "max_tokens": max_tokens}
    body = {
        "name": name,
        "role": role,
        "user_id": user,
        "scopes": {k: v for k, v in scopes.items() if v is not None},
        "limits": limits_body(rpm, tpm, concurrency, budget, budget_soft, budget_period),
        "expires_in_days": expires_in_days,
    }
    body = {k: v for k, v in body.items() if v is not None}
    created = Api(url, key, config).call("POST", "/api/keys", body, project=project)
    data = created["data"]
    out.print(f"created key [bold]{data['id']}[/] ({data['role']}) in project {data['project_id']}")
    out.print("it is shown only now; store it safely:", style="yellow")
    typer.echo(created["key"])


@app.command("list")
def list_keys(
    project: ProjectOption = None,
    all_keys: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """List keys (never their secrets)."""
    rows = Api(url, key, config).call(
        "GET", "/api/keys", project=project, include_revoked="true" if all_keys else None
    )
    table = Table("id", "name", "role", "user", "scopes", "limits", "last used", "expires",
                  "revoked")  # fmt: skip
    for k in rows:
        table.add_row(k["id"], k["name"], k["role"], k["user_id"] or "-",
                      _scopes_text(k["scopes"]), _limits_text(k["limits"]),
                      k["last_used_at"] or "never", k["expires_at"] or "-",
                      k["revoked_at"] or "")  # fmt: skip
    out.print(table)


@app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="Key id (see 'keel keys list').")],
    project: ProjectOption = None,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Revoke a key: refused from the next request on, by every replica."""
    data = Api(url, key, config).call("DELETE", f"/api/keys/{key_id}", project=project)
    out.print(f"revoked key [bold]{data['id']}[/] at {data['revoked_at']}")
