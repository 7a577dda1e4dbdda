"""`keel users`: people, and their role in a project."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from keel.cli.client import Api, ConfigOption, KeyOption, UrlOption
from keel.cli.keys import ProjectOption

app = typer.Typer(help="Users and their roles in a project.", no_args_is_help=True)
out = Console()


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Unique user name.")],
    role: Annotated[str, typer.Option(help="admin, developer, viewer or app.")] = "developer",
    email: Annotated[str | None, typer.Option(help="Email address.")] = None,
    project: ProjectOption = None,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Create a user who is a member of the project with ROLE."""
    body = {"name": name, "role": role, "email": email}
    data = Api(url, key, config).call("POST", "/api/users", body, project=project)
    out.print(f"created user [bold]{data['name']}[/] ({data['id']}) as {data['role']}")


@app.command("set-role")
def set_role(
    user_id: Annotated[str, typer.Argument(help="User id.")],
    role: Annotated[str, typer.Argument(help="admin, developer, viewer or app.")],
    project: ProjectOption = None,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Add a user to the project, or change their role (their keys follow at once)."""
    path = f"/api/users/{user_id}/membership"
    data = Api(url, key, config).call("PUT", path, {"role": role}, project=project)
    out.print(f"user [bold]{data['name']}[/] is now {data['role']}")


@app.command("list")
def list_users(
    project: ProjectOption = None,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """List the project's members."""
    table = Table("id", "name", "email", "role", "created")
    for u in Api(url, key, config).call("GET", "/api/users", project=project):
        table.add_row(u["id"], u["name"], u["email"] or "-", u["role"] or "-",
                      u["created_at"] or "-")  # fmt: skip
    out.print(table)


@app.command("revoke")
def revoke(
    user_id: Annotated[str, typer.Argument(help="User id.")],
    project: ProjectOption = None,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Remove a user from the project; their keys for it stop working at once."""
    path = f"/api/users/{user_id}/membership"
    data = Api(url, key, config).call("DELETE", path, project=project)
    out.print(f"removed user [bold]{data['name']}[/] from the project")
