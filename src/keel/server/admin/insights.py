"""/api/insights: topics (computed by an `insights.topics` job and stored), anomalies, drift
and similar requests over a project's sampled traffic (docs/insights.md), and the project's
insight settings."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, FastAPI, Query
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field

from keel.auth.audit import record
from keel.auth.keys import Principal
from keel.errors import InvalidRequest, NotFound
from keel.insights import drift as drift_mod
from keel.insights.jobs import KIND as TOPICS_KIND
from keel.insights.jobs import TopicsKind
from keel.insights.service import FEEDBACK_SOURCES, InsightsService
from keel.insights.store import InsightStore, ProjectSettings
from keel.insights.traffic import TrafficEmbedder
from keel.insights.vectors import Vectors
from keel.jobs.model import Job
from keel.server.admin.jobs import job_view
from keel.server.deps import ServicesDep, require
from keel.server.openai.files import job_system
from keel.server.responses import json_response
from keel.server.services import Services

HOUR_US = 3_600_000_000
WEBHOOK_TIMEOUT = 5.0


class Insights:
    """The service and the background embedder one process runs."""

    def __init__(self, services: Services):
        database = services.database
        store = InsightStore(database)

        def embedder() -> Any:
            # The bundled MiniLM when served (the figures in docs/insights.md are its own).
            served = list(services.catalog.embedders)
            named = [e for e in served if e.name == services.settings.embedding_model_name]
            return (named or served)[0] if served else None

        def embed_text(texts: list[str]) -> Vectors:
            model = embedder()
            loop = self.traffic.loop
            if model is None or loop is None:
                raise InvalidRequest("no embedding model is served; search by trace_id instead")
            result = asyncio.run_coroutine_threadsafe(model.embed(texts), loop).result(60)
            vectors: Vectors = result.vectors
            return vectors

        def audit(project_id: str, action: str, after: dict[str, Any]) -> None:
            with database.session() as session:
                record(
                    session,
                    "insights",
                    action,
                    "project",
                    project_id,
                    after=after,
                    project_id=project_id,
                )

        def notify(url: str, body: dict[str, Any]) -> None:
            httpx.post(url, json=body, timeout=WEBHOOK_TIMEOUT).raise_for_status()

        def feedback(project_id: str, trace_ids: list[str]) -> dict[str, list[float]]:
            return services.tracing.feedback_of(project_id, trace_ids, FEEDBACK_SOURCES)

        self.service = InsightsService(
            store, embed_text, audit=audit, notify=notify, feedback=feedback
        )
        settings = services.settings
        self.traffic = TrafficEmbedder(
            store,
            embedder,
            sample_rate=settings.insights_sample_rate,
            queue_size=settings.insights_queue_size,
        )

    def start(self) -> None:
        self.traffic.start()


class InsightMetrics(Collector):
    def __init__(self, insights: Insights):
        self.insights = insights

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        traffic = self.insights.traffic
        embedded = CounterMetricFamily("keel_insights_embedded", "Requests embedded for insights")
        embedded.add_metric([], traffic.embedded)
        yield embedded
        dropped = CounterMetricFamily(
            "keel_insights_dropped",
            "Sampled requests not embedded (queue full, no model, store failed)",
        )
        dropped.add_metric([], traffic.dropped)
        yield dropped
        queued = GaugeMetricFamily("keel_insights_queue_depth", "Requests waiting to be embedded")
        queued.add_metric([], traffic.depth())
        yield queued
        counts = self.insights.service.counts
        flagged = CounterMetricFamily(
            "keel_insights_anomalies", "Requests flagged as anomalous", labels=["project"]
        )
        for project, count in counts.flagged.items():
            flagged.add_metric([project], count)
        yield flagged
        alerts = CounterMetricFamily(
            "keel_insights_drift_alerts", "Drift alerts raised", labels=["project"]
        )
        for project, count in counts.drift_alerts.items():
            alerts.add_metric([project], count)
        yield alerts


def insights_of(services: Services) -> Insights:
    """The app's insights, built on first use; it hooks the trace recorder."""
    found = services.extras.get("insights")
    if found is None:
        found = Insights(services)
        services.extras["insights"] = found
        system = job_system(services)
        system.register(TopicsKind(found.service, system.store))
        services.tracing.recorder.listener = found.traffic.offer
        services.tracing.metrics.registry.register(InsightMetrics(found))
    assert isinstance(found, Insights)
    return found


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    insights = insights_of(app.state.services)
    insights.start()
    try:
        yield
    finally:
        await insights.traffic.close()


router = APIRouter(prefix="/insights", tags=["insights"], lifespan=_lifespan)


def _window(hours: float, until: float | None) -> tuple[int, int]:
    end = int((until if until is not None else time.time()) * 1e6) + 1
    return end - int(hours * HOUR_US), end


Hours = Annotated[float, Query(gt=0, le=24 * 366, description="Window length in hours")]
MAX_EPOCH = 1e11  # epoch seconds: past any real date, within a 64-bit microsecond count
Until = Annotated[
    float | None, Query(gt=0, le=MAX_EPOCH, description="End of the window, epoch seconds (now)")
]


class TopicsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hours: float = Field(24, gt=0, le=24 * 366, description="The window: the last N hours")
    until: float | None = Field(
        None, gt=0, le=MAX_EPOCH, description="End of the window, epoch seconds (now)"
    )
    route: str | None = Field(None, max_length=200, description="Only this route's requests")
    granularity: float | None = Field(
        None, gt=0, lt=5, description="Cut of the topic tree: lower gives more, finer topics"
    )


def _job_summary(job: Job | None) -> dict[str, Any] | None:
    if job is None:
        return None
    view = job_view(job)
    return {key: view[key] for key in ("id", "state", "progress", "error", "created_at",
                                       "finished_at")}  # fmt: skip


@router.post(
    "/topics",
    summary="Start an insights.topics job over a window (follow it at GET /api/insights/topics)",
    status_code=201,
)
async def start_topics(
    services: ServicesDep,
    principal: Annotated[Principal, require("traces:write")],
    body: TopicsRequest,
) -> Any:
    job = await start_topics_job(services, principal, body)
    return json_response(job_view(job), status=201)


async def start_topics_job(services: Services, principal: Principal, body: TopicsRequest) -> Job:
    """Create an insights.topics job over the asked window (the API's and the console's)."""
    insights_of(services)  # the kind is registered before the job exists
    system = job_system(services)
    since_us, until_us = _window(body.hours, body.until)
    params = {"since_us": since_us, "until_us": until_us, "route": body.route,
              "granularity": body.granularity}  # fmt: skip
    job: Job = await asyncio.to_thread(
        system.store.create, TOPICS_KIND, principal.project_id, principal.key_id, params,
        [("window", {})], "clustering the window's requests",
    )  # fmt: skip
    system.executor.wake()
    return job


@router.get(
    "/topics",
    summary="The stored topics of a window (the newest run, or a job's), with its job's progress",
)
async def topics(
    services: ServicesDep,
    principal: Annotated[Principal, require("traces:read")],
    job_id: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9._-]+$")] = None,
    route: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """`job`: the topics job asked for, or the project's newest; `result`: the topics it
    stored (null while it runs), with the requests embedded since assigned to them."""
    service = insights_of(services).service
    store = job_system(services).store
    project = principal.project_id
    if job_id is not None:
        job = await asyncio.to_thread(store.get, job_id, project)
        if job is None or job.kind != TOPICS_KIND:
            raise NotFound(
                f"no topics job '{job_id}' in this project; start one with "
                "POST /api/insights/topics (or 'keel insights topics')",
                param="job_id",
            )
    else:
        newest, _ = await asyncio.to_thread(lambda: store.page(project, kind=TOPICS_KIND, limit=1))
        job = newest[0] if newest else None
    result = await asyncio.to_thread(
        lambda: service.stored_topics(project, job_id=job_id, route=route)
    )
    if job is None and result is None:
        raise NotFound(
            "no topics computed yet in this project; start a run with POST "
            "/api/insights/topics (or 'keel insights topics')",
            code="no_topics",
        )
    return {"job": _job_summary(job), "result": result}


@router.get(
    "/anomalies", summary="Requests unlike the reference window, flagged over the threshold"
)
async def anomalies(
    services: ServicesDep,
    principal: Annotated[Principal, require("traces:read")],
    hours: Hours = 24,
    reference_hours: Annotated[
        float, Query(gt=0, le=24 * 366, description="Reference window before it, in hours")
    ] = 24 * 7,
    until: Until = None,
    route: str | None = None,
    threshold: Annotated[float | None, Query(gt=0, le=2)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    service = insights_of(services).service
    recent = _window(hours, until)
    reference = (recent[0] - int(reference_hours * HOUR_US), recent[0])
    return await asyncio.to_thread(
        service.anomalies,
        principal.project_id,
        reference,
        recent,
        route=route,
        threshold=threshold,
        limit=limit,
    )


class DriftRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    recent_hours: float = Field(24, gt=0, le=24 * 366, description="The recent window, hours")
    reference_hours: float = Field(
        24 * 7, gt=0, le=24 * 366, description="The reference window before it, hours"
    )
    until: float | None = Field(
        None, gt=0, le=MAX_EPOCH, description="End of the recent window, epoch seconds"
    )
    route: str | None = None
    alpha: float = Field(drift_mod.ALPHA, gt=0, lt=0.5, description="False-alarm rate per check")


@router.post("/drift", summary="Compare the recent topic mix with the reference; alert on a shift")
async def drift(
    services: ServicesDep,
    principal: Annotated[Principal, require("traces:write")],
    body: DriftRequest,
) -> dict[str, Any]:
    service = insights_of(services).service
    recent = _window(body.recent_hours, body.until)
    reference = (recent[0] - int(body.reference_hours * HOUR_US), recent[0])
    return await asyncio.to_thread(
        service.drift, principal.project_id, reference, recent, route=body.route, alpha=body.alpha
    )


@router.get("/similar", summary="Past requests most like a trace's or a text")
async def similar(
    services: ServicesDep,
    principal: Annotated[Principal, require("traces:read")],
    trace_id: str | None = None,
    text: Annotated[str | None, Query(max_length=4000)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> dict[str, Any]:
    service = insights_of(services).service
    return await asyncio.to_thread(
        lambda: service.similar(principal.project_id, trace_id=trace_id, text=text, limit=limit)
    )


class InsightSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    anomaly_threshold: float = Field(gt=0, le=2, description="Outlier score that flags a request")
    drift_webhook: str | None = Field(
        None,
        max_length=500,
        pattern=r"^https?://",
        description="URL posted a JSON body on each drift alert",
    )


@router.get("/settings", summary="The project's anomaly threshold and drift webhook")
async def get_settings(
    services: ServicesDep, principal: Annotated[Principal, require("traces:read")]
) -> InsightSettings:
    found = await asyncio.to_thread(insights_of(services).service.settings, principal.project_id)
    return InsightSettings(
        anomaly_threshold=found.anomaly_threshold, drift_webhook=found.drift_webhook
    )


@router.put("/settings", summary="Set the project's anomaly threshold and drift webhook")
async def put_settings(
    services: ServicesDep,
    principal: Annotated[Principal, require("traces:write")],
    body: InsightSettings,
) -> InsightSettings:
    service = insights_of(services).service
    before = await asyncio.to_thread(service.settings, principal.project_id)

    def save() -> None:
        service.save_settings(
            principal.project_id, ProjectSettings(body.anomaly_threshold, body.drift_webhook)
        )
        with services.database.session() as session:
            record(
                session,
                principal,
                "insights.settings",
                "project",
                principal.project_id,
                before=before.__dict__,
                after=body.model_dump(),
            )

    await asyncio.to_thread(save)
    return body
