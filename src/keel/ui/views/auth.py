"""Sign in with an API key (users have no passwords: a user signs in with one of their
keys), and sign out. The session cookie is set here and nowhere else."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from keel.auth.permissions import allowed
from keel.errors import AuthenticationFailed
from keel.ui.session import (
    CSRF_FIELD,
    LOGIN_COOKIE,
    LOGIN_SECONDS,
    SESSION_COOKIE,
    SESSION_SECONDS,
    clear_cookie,
    same_origin,
    set_cookie,
)
from keel.ui.web import UiError, UiRoute, page, read_form, redirect, services_of, signer_of

router = APIRouter(route_class=UiRoute)


def safe_next(value: str | None) -> str:
    """Only a console path: never another site (//evil, https://…) after signing in."""
    if not value or not value.startswith("/ui") or value.startswith("//") or "\\" in value:
        return "/ui/"
    return value


def _login_page(
    request: Request, csrf: str, next_path: str, error: str | None, status: int
) -> Response:
    return page(request, "login.html", status, csrf=csrf, next_path=next_path, error=error)


@router.get("/login")
async def login_form(
    request: Request, next: Annotated[str | None, Query(max_length=2000)] = None
) -> Response:
    signer = await signer_of(request)
    if signer.decode(request.cookies.get(SESSION_COOKIE), "session") is not None:
        return redirect(safe_next(next))
    login = signer.decode(request.cookies.get(LOGIN_COOKIE), "login")
    if login is None:
        login = signer.issue("login", seconds=LOGIN_SECONDS)
    response = _login_page(request, signer.csrf_token(login), safe_next(next), None, 200)
    set_cookie(request, response, LOGIN_COOKIE, signer.encode(login), LOGIN_SECONDS)
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    signer = await signer_of(request)
    services = services_of(request)
    form = await read_form(request)
    login_session = signer.decode(request.cookies.get(LOGIN_COOKIE), "login")
    if not same_origin(request):
        raise UiError(403, "refused: the sign-in form was posted from another site")
    if login_session is None or not signer.csrf_ok(login_session, form.get(CSRF_FIELD)):
        raise UiError(403, "refused: the sign-in form expired or was not Keel's; reload it")
    next_path = safe_next(form.get("next"))
    csrf = signer.csrf_token(login_session)
    token = form.get("api_key", "").strip()
    try:
        principal = await services.keys.verify(token)
    except AuthenticationFailed as exc:
        services.access.usage.rejected(request.client.host if request.client else "unknown")
        return _login_page(request, csrf, next_path, exc.message, 401)
    if not allowed(principal.role, "traces:read"):
        return _login_page(
            request,
            csrf,
            next_path,
            f"a key with role '{principal.role}' is for inference only and cannot sign in "
            "to the console; use a viewer, developer or admin key",
            403,
        )
    session = signer.issue("session", key_id=principal.key_id, seconds=SESSION_SECONDS)
    response = redirect(next_path)
    set_cookie(request, response, SESSION_COOKIE, signer.encode(session), SESSION_SECONDS)
    clear_cookie(request, response, LOGIN_COOKIE)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    signer = await signer_of(request)
    session = signer.decode(request.cookies.get(SESSION_COOKIE), "session")
    if session is not None:
        form = await read_form(request)
        if not same_origin(request) or not signer.csrf_ok(session, form.get(CSRF_FIELD)):
            raise UiError(403, "refused: the sign-out form's CSRF token is missing or wrong")
    response = redirect("/ui/login")
    clear_cookie(request, response, SESSION_COOKIE)
    return response
