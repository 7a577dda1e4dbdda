"""The console's plumbing: templates, the signed-in caller as a dependency, forms, HTML errors.

Every /ui route declares the permission it needs with `ui_require("…")` (the same names
as /api); a test walks the route table so no console route ships without one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from keel.auth.keys import Principal
from keel.auth.permissions import allowed
from keel.auth.secrets import SecretBox
from keel.errors import KeelError
from keel.server.errors import validation_error
from keel.server.services import Services
from keel.ui import format as fmt
from keel.ui.session import (
    CSRF_FIELD,
    SESSION_COOKIE,
    SessionSigner,
    clear_cookie,
    same_origin,
)

log = logging.getLogger("keel.ui")
HERE = Path(__file__).parent
MAX_FORM_FIELDS = 200

# What the browser may do with console pages: only Keel's own files, no inline script or
# style, no framing, forms post back to Keel only.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

NAV: tuple[tuple[str, str, str], ...] = (
    ("/ui/", "Overview", "traces:read"),
    ("/ui/traces", "Traces", "traces:read"),
    ("/ui/prompts", "Prompts", "prompts:read"),
    ("/ui/routes", "Routes", "routes:read"),
    ("/ui/guard", "Guard", "traces:read"),
    ("/ui/insights", "Insights", "traces:read"),
    ("/ui/kbs", "Knowledge", "kb:read"),
    ("/ui/datasets", "Datasets", "datasets:read"),
    ("/ui/experiments", "Experiments", "experiments:read"),
    ("/ui/jobs", "Jobs", "jobs:read"),
    ("/ui/workflows", "Workflows", "workflows:read"),
    ("/ui/finetune", "Fine-tuning", "models:read"),
    ("/ui/audit", "Audit log", "audit:read"),
    ("/ui/keys", "Keys", "keys:write"),
    ("/ui/users", "Users", "users:write"),
    ("/ui/projects", "Projects", "projects:write"),
)


class LoginRequired(Exception):
    """No valid session: the browser goes to the login page (and back afterwards)."""

    def __init__(self, next_path: str, clear: bool = False):
        super().__init__(next_path)
        self.next_path = next_path
        self.clear = clear


class UiError(Exception):
    """A console page that cannot be shown; rendered as an HTML error page."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class ConsoleState:
    """Per-app console state: the template environment and the session signer."""

    templates: Environment
    signer: SessionSigner | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def build_state() -> ConsoleState:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(fmt.FILTERS)
    return ConsoleState(templates=env)


def console_state(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def signer_of(request: Request) -> SessionSigner:
    """The signer, keyed from Keel's secret key (read once, off the event loop)."""
    state = console_state(request)
    if state.signer is None:
        async with state.lock:
            if state.signer is None:
                settings = services_of(request).settings
                box = await asyncio.to_thread(
                    SecretBox.load, settings.data_dir, settings.secret_key
                )
                state.signer = SessionSigner(box.derive("keel console sessions v1"))
    return state.signer


async def read_form(request: Request) -> dict[str, str]:
    """The url-encoded form body (the first value of each field)."""
    cached: dict[str, str] | None = getattr(request.state, "ui_form", None)
    if cached is not None:
        return cached
    body = await request.body()
    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        raise UiError(400, "the form could not be read; send it from the console page") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if "\x00" in value:
            raise UiError(400, f"field {name!r} contains a NUL character")
        form.setdefault(name, value)
    request.state.ui_form = form
    return form


@dataclass(frozen=True)
class Console:
    """The signed-in caller of one console request."""

    request: Request
    services: Services
    principal: Principal
    csrf: str

    def can(self, permission: str) -> bool:
        return allowed(self.principal.role, permission)

    @property
    def nav(self) -> list[tuple[str, str]]:
        return [(href, label) for href, label, perm in NAV if self.can(perm)]

    async def form(self) -> dict[str, str]:
        return await read_form(self.request)


def _here(request: Request) -> str:
    path = request.url.path
    return f"{path}?{request.url.query}" if request.url.query and request.method == "GET" else path


class UiRequire:
    """Dependency: a signed-in caller whose role grants `permission`; POSTs pass CSRF checks.

    The permission is kept on the instance so tests can read every route's permission
    from the app's route table, as they do for /api.
    """

    def __init__(self, permission: str):
        self.permission = permission

    async def __call__(self, request: Request) -> Console:
        signer = await signer_of(request)
        services = services_of(request)
        session = signer.decode(request.cookies.get(SESSION_COOKIE), "session")
        if session is None:
            raise LoginRequired(_here(request), clear=SESSION_COOKIE in request.cookies)
        principal = await services.keys.principal_of(session.key_id)
        if principal is None:  # revoked, expired or removed since login
            raise LoginRequired(_here(request), clear=True)
        if request.method == "POST":
            if not same_origin(request):
                raise UiError(403, "refused: the form was posted from another site")
            form = await read_form(request)
            if not signer.csrf_ok(session, form.get(CSRF_FIELD)):
                raise UiError(
                    403, "refused: the form's CSRF token is missing or wrong; reload the page"
                )
        if not allowed(principal.role, self.permission):
            raise UiError(
                403,
                f"role '{principal.role}' may not {self.permission}; "
                "ask an admin of the project for a key with a role that may",
            )
        ip = request.client.host if request.client else None
        principal = dataclasses.replace(principal, ip=ip)  # into the audit log of changes
        return Console(request, services, principal, signer.csrf_token(session))


def ui_require(permission: str) -> Any:
    """`c: Annotated[Console, ui_require("prompts:write")]` in a console handler."""
    return Depends(UiRequire(permission))


def page(
    request: Request,
    template: str,
    status: int = 200,
    console: Console | None = None,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    env = console_state(request).templates
    html = env.get_template(template).render(c=console, request=request, **context)
    return HTMLResponse(html, status, headers={**SECURITY_HEADERS, **(headers or {})})


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, 303, headers=dict(SECURITY_HEADERS))


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return page(request, "error.html", status, message=message, status_code=status)


async def db(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking service call in a worker thread; a store outage is a 503 page."""
    try:
        return await asyncio.to_thread(function, *args, **kwargs)
    except SQLAlchemyError as exc:
        raise UiError(
            503, f"the store is not answering ({exc.__class__.__name__}); retry shortly"
        ) from None


class UiRoute(APIRoute):
    """An APIRoute whose failures are HTML pages (or a redirect to the login page)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired as exc:
                response = redirect(f"/ui/login?next={quote(exc.next_path, safe='/')}")
                if exc.clear:
                    clear_cookie(request, response, SESSION_COOKIE)
                return response
            except UiError as exc:
                return error_page(request, exc.status, exc.message)
            except KeelError as exc:
                return error_page(request, exc.status, exc.message)
            except RequestValidationError as exc:
                error = validation_error(exc)
                return error_page(request, error.status, error.message)
            except ValidationError as exc:
                error = validation_error(RequestValidationError(exc.errors()))
                return error_page(request, error.status, error.message)

        return handle
