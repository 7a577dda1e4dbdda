"""`keel projects`: tenants, with their limits and budget (admins of 'default' only)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from keel.cli.client import Api, ConfigOption, KeyOption, UrlOption
from keel.cli.keys import (
    BudgetAmount,
    BudgetPeriod,
    BudgetSoft,
    Concurrency,
    Rpm,
    Tpm,
    _limits_text,
    limits_body,
)

app = typer.Typer(help="Projects: tenants with their own keys, limits and budget.",
                  no_args_is_help=True)  # fmt: skip
out = Console()


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Project name (also its id).")],
    rpm: Rpm = None,
    tpm: Tpm = None,
    concurrency: Concurrency = None,
    budget: BudgetAmount = None,
    budget_soft: BudgetSoft = None,
    budget_period: BudgetPeriod = "month",
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Create a project; then `keel keys create --project NAME --role admin` for its admin."""
    limits = limits_body(rpm, tpm, concurrency, budget, budget_soft, budget_period)
    data = Api(url, key, config).call("POST", "/api/projects", {"name": name, "limits": limits})
    out.print(f"created project [bold]{data['id']}[/] (limits: {_limits_text(data['limits'])})")


@app.command("limits")
def set_limits(
    name: Annotated[str, typer.Argument(help="Project id.")],
    rpm: Rpm = None,
    tpm: Tpm = None,
    concurrency: Concurrency = None,
    budget: BudgetAmount = None,
    budget_soft: BudgetSoft = None,
    budget_period: BudgetPeriod = "month",
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Replace a project's limits and budget (options not given are removed)."""
    limits = limits_body(rpm, tpm, concurrency, budget, budget_soft, budget_period)
    data = Api(url, key, config).call("PUT", f"/api/projects/{name}/limits", limits)
    out.print(f"project [bold]{data['id']}[/] limits: {_limits_text(data['limits'])}")


@app.command("list")
def list_projects(
    url: UrlOption = None, key: KeyOption = None, config: ConfigOption = None
) -> None:
    """List the projects you can see."""
    table = Table("id", "limits", "created", "disabled")
    for p in Api(url, key, config).call("GET", "/api/projects"):
        table.add_row(p["id"], _limits_text(p["limits"]), p["created_at"] or "-",
                      p["disabled_at"] or "")  # fmt: skip
    out.print(table)


@app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="Project id.")],
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Disable a project: every key of it is revoked; its records stay."""
    data = Api(url, key, config).call("DELETE", f"/api/projects/{name}")
    out.print(f"disabled project [bold]{data['id']}[/] at {data['disabled_at']}")
