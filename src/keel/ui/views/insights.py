"""Insights in the console: the newest stored topics run (a 2-D scatter coloured by topic, the
request on hover, the topic table with trends and costs) and a form that starts one, the
anomaly list, drift alerts, and the requests most similar to a trace."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response
from markupsafe import Markup, escape
from pydantic import ValidationError

from keel.errors import KeelError
from keel.insights.jobs import KIND as TOPICS_KIND
from keel.server.admin.insights import (
    HOUR_US,
    MAX_EPOCH,
    TopicsRequest,
    insights_of,
    start_topics_job,
)
from keel.server.openai.files import job_system
from keel.ui.web import Console, UiError, UiRoute, db, page, redirect, ui_require

router = APIRouter(route_class=UiRoute)
WIDTH, HEIGHT, PAD = 640, 360, 12
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")  # fmt: skip
MAX_POINTS = 3000  # markers drawn; the table still counts every request
REFRESH_S = 2  # how often the page reloads while a topics job runs


def topic_map(points: list[dict[str, Any]], labels: dict[int, str]) -> Markup:
    """The window's requests as an inline SVG scatter, each with its request as a tooltip."""
    shown = points[:MAX_POINTS]
    xs = [p["x"] for p in shown] or [0.0]
    ys = [p["y"] for p in shown] or [0.0]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    sx = (WIDTH - 2 * PAD) / ((x1 - x0) or 1.0)
    sy = (HEIGHT - 2 * PAD) / ((y1 - y0) or 1.0)
    marks = []
    for p in shown:
        colour = PALETTE[p["topic"] % len(PALETTE)]
        cx = PAD + (p["x"] - x0) * sx
        cy = HEIGHT - PAD - (p["y"] - y0) * sy
        tip = f"{labels.get(p['topic'], '')}: {p['text']}"
        marks.append(
            f'<circle class="point" cx="{cx:.1f}" cy="{cy:.1f}" r="3.5" fill="{colour}" '
            f'data-topic="{p["topic"]}"><title>{escape(tip)}</title></circle>'
        )
    return Markup(
        f'<svg class="topic-map" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="map-title map-desc"><title id="map-title">Topic map</title>'
        f'<desc id="map-desc">{len(shown)} requests placed by their two principal components, '
        f"coloured by topic; hover a point to read the request.</desc>"
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="none" stroke="#ccc"/>'
        + "".join(marks)
        + "</svg>"
    )


def _problem(error: KeelError) -> str:
    return error.message


@router.get("/insights")
async def insights(
    c: Annotated[Console, ui_require("traces:read")],
    hours: Annotated[float, Query(gt=0, le=24 * 366)] = 24,
    until: Annotated[float | None, Query(gt=0, le=MAX_EPOCH)] = None,
) -> Response:
    """The stored result of the newest topics job (clustering a window takes seconds to a
    minute, so it runs as a job, started here or by `keel insights topics`), its progress
    while it runs, and the anomalies of the window scored now (a neighbour search, quick)."""
    service = insights_of(c.services).service
    store = job_system(c.services).store
    project = c.principal.project_id
    newest, _ = await db(store.page, project, kind=TOPICS_KIND, limit=1)
    job = newest[0] if newest else None
    result = await db(lambda: service.stored_topics(project))
    context: dict[str, Any] = {"hours": hours, "job": job, "topics": result, "map": None,
                               "anomalies": None, "palette": PALETTE}  # fmt: skip
    if result is not None:
        labels = {t["topic"]: t["label"] for t in result["topics"]}
        context["map"] = topic_map(result.get("points", []), labels)
        context["topics_window"] = (_iso(result["since_us"]), _iso(result["until_us"]))
    end = int((until if until is not None else time.time()) * 1e6) + 1
    window = (end - int(hours * HOUR_US), end)
    try:
        # The newest tenth of the window against the rest of it.
        recent = (end - int(hours * HOUR_US / 10), end)
        context["anomalies"] = await db(service.anomalies, project, (window[0], recent[0]),
                                        recent)  # fmt: skip
    except KeelError as error:
        context["anomalies_problem"] = _problem(error)
    alerts = await db(c.services.audit.list, project, action="insights.drift", limit=20)
    context["alerts"] = [a.as_dict() for a in alerts]
    # While the job runs the page reloads itself to follow it (no script needed). The URL
    # is explicit: a bare refresh of a URL with a #fragment is a same-page jump, no reload.
    here = c.request.url.path + (f"?{c.request.url.query}" if c.request.url.query else "")
    follow = job is not None and not job.final
    headers = {"Refresh": f"{REFRESH_S}; url={here}"} if follow else None
    return page(c.request, "insights.html", console=c, headers=headers, **context)


@router.post("/insights/topics")
async def start_topics(c: Annotated[Console, ui_require("traces:write")]) -> Response:
    form = await c.form()
    try:
        body = TopicsRequest.model_validate({"hours": form.get("hours") or 24})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UiError(400, f"invalid window: {first['msg']}; give the hours as a number "
                      "greater than 0") from None  # fmt: skip
    await start_topics_job(c.services, c.principal, body)
    return redirect(f"/ui/insights?hours={body.hours:g}")


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S")


@router.get("/insights/similar")
async def similar(
    c: Annotated[Console, ui_require("traces:read")],
    trace_id: Annotated[str, Query(pattern=r"^[0-9a-f]{1,64}$")],
) -> Response:
    service = insights_of(c.services).service
    try:
        found = await db(lambda: service.similar(c.principal.project_id, trace_id=trace_id))
    except KeelError as error:
        raise UiError(error.status, error.message) from None
    return page(c.request, "insights_similar.html", console=c, trace_id=trace_id, found=found)
