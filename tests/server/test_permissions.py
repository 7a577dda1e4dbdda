"""Every /api route declares a permission, and the role table decides who gets through."""

from __future__ import annotations

import copy
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from keel.auth.permissions import ROLE_PERMISSIONS, allowed
from keel.server.app import create_app
from keel.server.deps import Require
from tests.support.app import build_services


def declared_permission(route: APIRoute) -> str | None:
    found = [
        dep.call.permission for dep in route.dependant.dependencies if isinstance(dep.call, Require)
    ]
    return found[0] if found else None


def api_routes(app: FastAPI) -> list[tuple[str, set[str], APIRoute]]:
    """(full path, methods, route) of every /api route in the app's route table."""
    found = []
    for context in iter_route_contexts(app.routes):
        route = context.route
        if isinstance(route, APIRoute) and context.path.startswith("/api"):
            found.append((context.path, set(route.methods), route))
    return found


def make_app(tmp_path: Path) -> FastAPI:
    services, _ = build_services(tmp_path, "http://127.0.0.1:9/v1")
    return create_app(services.settings, services=services)


def test_every_api_route_declares_a_permission(tmp_path: Path) -> None:
    routes = api_routes(make_app(tmp_path))
    assert routes, "expected /api routes"
    undeclared = [f"{sorted(m)} {p}" for p, m, r in routes if not declared_permission(r)]
    assert undeclared == [], "add principal: Annotated[Principal, require('…')] to these"


def test_the_check_catches_a_route_without_a_permission() -> None:
    # The same inspection, on a route built without one, must flag it.
    router = APIRouter()

    @router.get("/api/unguarded")
    async def unguarded() -> dict[str, str]:
        return {}

    route = router.routes[0]
    assert isinstance(route, APIRoute)
    assert declared_permission(route) is None


def test_removing_the_permission_of_a_real_route_is_caught(tmp_path: Path) -> None:
    routes = api_routes(make_app(tmp_path))
    checked = []
    for path, methods, route in routes:
        if path == "/api/keys/{key_id}" and methods == {"DELETE"}:
            # A copy of the revoke route as it would be without its require("keys:write").
            route = copy.copy(route)
            route.dependant = copy.copy(route.dependant)
            route.dependant.dependencies = [
                d for d in route.dependant.dependencies if not isinstance(d.call, Require)
            ]
        checked.append((path, methods, route))
    undeclared = [f"{sorted(m)} {p}" for p, m, r in checked if not declared_permission(r)]
    assert undeclared == ["['DELETE'] /api/keys/{key_id}"]
    assert all(declared_permission(r) for _, _, r in api_routes(make_app(tmp_path / "again")))


@pytest.mark.parametrize(
    ("role", "permission", "expected"),
    [
        ("admin", "providers:write", True),
        ("developer", "prompts:write", True),
        ("developer", "providers:write", False),
        ("developer", "audit:read", True),
        ("viewer", "prompts:read", True),
        ("viewer", "prompts:write", False),
        ("app", "inference", True),
        ("app", "prompts:read", False),
        ("admin", "keys:write", True),
        ("admin", "users:write", True),
        ("developer", "keys:write", False),
        ("developer", "users:write", False),
        ("developer", "projects:write", False),
        ("viewer", "keys:read", True),
        ("viewer", "keys:write", False),
        ("app", "keys:read", False),
        ("app", "users:read", False),
        ("nobody", "inference", False),
        ("developer", "traces:write", True),
        ("viewer", "traces:read", True),
        ("viewer", "traces:write", False),
        ("app", "traces:read", False),
        ("app", "metrics:read", False),
        ("developer", "cache:write", True),
        ("viewer", "cache:read", True),
        ("viewer", "cache:write", False),
        ("app", "cache:read", False),
    ],
)
def test_role_table(role: str, permission: str, expected: bool) -> None:
    assert allowed(role, permission) is expected


async def test_route_by_role_matrix_is_enforced(tmp_path: Path) -> None:
    services, _ = build_services(tmp_path, "http://127.0.0.1:9/v1")
    project = services.keys.ensure_project()
    keys = {
        role: services.keys.create_key(project_id=project, role=role, name=role)[1]
        for role in ROLE_PERMISSIONS
    }
    app = create_app(services.settings, services=services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://keel") as client:
        for path, methods, route in api_routes(app):
            permission = declared_permission(route)
            assert permission is not None
            for role, key in keys.items():
                for method in methods:
                    response = await client.request(
                        method, path, headers={"Authorization": f"Bearer {key}"}
                    )
                    refused = response.status_code == 403
                    assert refused is not allowed(role, permission), (
                        role, method, path, response.status_code,
                    )  # fmt: skip
