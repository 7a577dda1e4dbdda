"""The web console at /ui: server-rendered pages over the same services and permissions as
/api, signed-cookie sessions with CSRF checks, no build step and nothing from a CDN."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles

from keel.ui.views import (
    admin,
    auth,
    evals,
    finetune,
    guard,
    insights,
    jobs,
    knowledge,
    overview,
    prompts,
    routes,
    traces,
    workflows,
)
from keel.ui.web import HERE, UiRoute, build_state


def mount(app: FastAPI) -> None:
    """Serve the console at /ui (pages are left out of the OpenAPI schema: they are HTML)."""
    router = APIRouter(prefix="/ui", route_class=UiRoute, include_in_schema=False)
    for module in (
        auth,
        overview,
        traces,
        prompts,
        routes,
        guard,
        insights,
        knowledge,
        jobs,
        evals,
        finetune,
        workflows,
        admin,
    ):
        router.include_router(module.router)
    app.state.console = build_state()
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")
