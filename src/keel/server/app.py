"""create_app(settings): the ASGI application, with services started in its lifespan."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

import keel
from keel import ui
from keel.server import admin, errors, health, metrics
from keel.server.declarations import apply_at_start
from keel.server.hot import HotRoutes, document_bodies
from keel.server.middleware import RequestContext
from keel.server.openai import batches, files, fine_tuning
from keel.server.openai.feedback import router as feedback_router
from keel.server.openai.router import HOT_BODIES, HOT_ROUTES
from keel.server.openai.router import router as openai_router
from keel.server.services import (
    AdminKeyNotice,
    Progress,
    Services,
    log_admin_key,
    start_services,
    stop_services,
)
from keel.settings import Settings
from keel.store.files import private_dir


def create_app(
    settings: Settings,
    *,
    on_admin_key: AdminKeyNotice = log_admin_key,
    progress: Progress | None = None,
    services: Services | None = None,
    declarations: Path | None = None,
) -> FastAPI:
    """Build the app. Pass `services` to serve ones the caller started (tests do), and
    `declarations` (keel.yaml) to apply its providers, models, routes, … at start."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if services is not None:
            if declarations is not None:
                await apply_at_start(app, services, declarations, progress)
            yield
            return
        private_dir(settings.data_dir)  # before anything is written into it
        started = await start_services(settings, on_admin_key=on_admin_key, progress=progress)
        app.state.services = started
        if declarations is not None:
            try:
                await apply_at_start(app, started, declarations, progress)
            except BaseException:
                await stop_services(started)
                raise
        # Everything imported and built at start lives for the whole process: keep it out of
        # the collector's full passes, which otherwise pause requests for tens of ms.
        gc.freeze()
        try:
            yield
        finally:
            await stop_services(started)

    app = FastAPI(
        title="Keel",
        version=keel.__version__,
        summary="OpenAI-compatible LLM gateway with deployments, prompts, guardrails and tracing.",
        lifespan=lifespan,
        # Keel traces every request itself (tracing/, with its own OTLP export); FastAPI's
        # native telemetry would only duplicate that, and checking whether it is configured
        # cost 2 % of the CPU of a completion (docs/benchmarks.md).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    errors.install(app)
    app.include_router(health.router)
    app.include_router(openai_router)
    app.include_router(feedback_router)
    app.include_router(files.router)  # with the job system's lifespan
    app.include_router(batches.router)
    app.include_router(fine_tuning.router)  # with the training executor's lifespan
    app.include_router(admin.router)
    app.include_router(metrics.router)
    ui.mount(app)
    document_bodies(app, HOT_BODIES)
    # Added first, so it runs inside RequestContext: hot routes get ids and the body limit.
    app.add_middleware(HotRoutes, routes=HOT_ROUTES)
    app.add_middleware(
        RequestContext,
        max_body_bytes=settings.max_body_bytes,
        body_timeout=settings.request_body_timeout,
    )
    if services is not None:
        app.state.services = services
    return app
