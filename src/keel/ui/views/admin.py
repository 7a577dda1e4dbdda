"""Keys, users and projects (admins only) and the audit log, over the identity service.

A new key is shown once, on the page that answers its creation, as `keel keys create` does;
no page shows an existing key's secret, hash or salt.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import ValidationError

from keel.auth.identity import KeySpec, ProjectSpec, UserSpec
from keel.auth.keys import ROLES
from keel.ui.web import Console, UiError, UiRoute, db, page, redirect, ui_require

router = APIRouter(route_class=UiRoute)

Ident = Annotated[str, Path(max_length=64)]


def _spec_error(exc: ValidationError) -> UiError:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return UiError(400, f"invalid {where or 'form'}: {first['msg']}")


# -- keys ----------------------------------------------------------------------------------


@router.get("/keys")
async def keys(c: Annotated[Console, ui_require("keys:write")], revoked: bool = False) -> Response:
    identity = c.services.access.identity
    rows = await db(identity.list_keys, c.principal, c.principal.project_id,
                    include_revoked=revoked)  # fmt: skip
    users = await db(identity.list_users, c.principal, c.principal.project_id)
    return page(c.request, "keys.html", console=c, keys=rows, users=users, roles=ROLES,
                revoked=revoked)  # fmt: skip


@router.post("/keys")
async def create_key(c: Annotated[Console, ui_require("keys:write")]) -> Response:
    form = await c.form()
    try:
        spec = KeySpec(
            name=form.get("name") or "api key",
            role=form.get("role") or None,
            user_id=form.get("user_id") or None,
            expires_in_days=float(form["expires_in_days"]) if form.get("expires_in_days") else None,
        )
    except ValidationError as exc:
        raise _spec_error(exc) from None
    except ValueError:
        raise UiError(400, "expires in days must be a number") from None
    view, token = await db(
        c.services.access.identity.create_key, c.principal, c.principal.project_id, spec
    )
    return page(c.request, "key_created.html", console=c, key=view, token=token)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(c: Annotated[Console, ui_require("keys:write")], key_id: Ident) -> Response:
    form = await c.form()
    if form.get("confirm") != "yes":
        raise UiError(400, "tick the confirmation box to revoke a key")
    await db(c.services.access.identity.revoke_key, c.principal, c.principal.project_id, key_id)
    return redirect("/ui/keys?revoked_key=" + key_id)


# -- users ---------------------------------------------------------------------------------


@router.get("/users")
async def users(c: Annotated[Console, ui_require("users:write")]) -> Response:
    rows = await db(c.services.access.identity.list_users, c.principal, c.principal.project_id)
    return page(c.request, "users.html", console=c, users=rows, roles=ROLES)


@router.post("/users")
async def create_user(c: Annotated[Console, ui_require("users:write")]) -> Response:
    form = await c.form()
    try:
        spec = UserSpec(name=form.get("name", ""), email=form.get("email") or None,
                        role=form.get("role") or "developer")  # fmt: skip
    except ValidationError as exc:
        raise _spec_error(exc) from None
    await db(c.services.access.identity.create_user, c.principal, c.principal.project_id, spec)
    return redirect("/ui/users")


@router.post("/users/{user_id}/role")
async def set_role(c: Annotated[Console, ui_require("users:write")], user_id: Ident) -> Response:
    form = await c.form()
    role = form.get("role", "")
    if role not in ROLES:
        raise UiError(400, f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    await db(c.services.access.identity.set_membership, c.principal, c.principal.project_id,
             user_id, role)  # fmt: skip
    return redirect("/ui/users")


# -- projects ------------------------------------------------------------------------------


@router.get("/projects")
async def projects(c: Annotated[Console, ui_require("projects:write")]) -> Response:
    rows = await db(c.services.access.identity.list_projects, c.principal)
    return page(c.request, "projects.html", console=c, projects=rows)


@router.post("/projects")
async def create_project(c: Annotated[Console, ui_require("projects:write")]) -> Response:
    form = await c.form()
    try:
        spec = ProjectSpec(name=form.get("name", ""))
    except ValidationError as exc:
        raise _spec_error(exc) from None
    await db(c.services.access.identity.create_project, c.principal, spec)
    return redirect("/ui/projects")


# -- audit log -----------------------------------------------------------------------------


@router.get("/audit")
async def audit(
    c: Annotated[Console, ui_require("audit:read")],
    action: Annotated[str | None, Query(max_length=64)] = None,
    target_type: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Annotated[int | None, Query(ge=0, le=2**62)] = None,
) -> Response:
    limit = 50
    entries = await db(c.services.audit.list, c.principal.project_id, action=action or None,
                       target_type=target_type or None, before_id=cursor, limit=limit)  # fmt: skip
    next_cursor = entries[-1].id if len(entries) == limit else None
    return page(c.request, "audit.html", console=c, entries=[e.as_dict() for e in entries],
                next_cursor=next_cursor, action=action or "",
                target_type=target_type or "")  # fmt: skip
