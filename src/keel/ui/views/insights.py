"""Insights in the console: the topic map of a window (a 2-D scatter coloured by topic, the
request on hover), the topic table with trends and costs, the anomaly list, drift alerts,
and the requests most similar to a trace."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response
from markupsafe import Markup, escape

from keel.errors import KeelError
from keel.server.admin.insights import HOUR_US, MAX_EPOCH, insights_of
from keel.ui.web import Console, UiError, UiRoute, db, page, ui_require

router = APIRouter(route_class=UiRoute)
WIDTH, HEIGHT, PAD = 640, 360, 12
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")  # fmt: skip
MAX_POINTS = 3000  # markers drawn; the table still counts every request


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
    service = insights_of(c.services).service
    project = c.principal.project_id
    end = int((until if until is not None else time.time()) * 1e6) + 1
    window = (end - int(hours * HOUR_US), end)
    context: dict[str, Any] = {"hours": hours, "problem": None, "topics": None,
                               "anomalies": None, "map": None}  # fmt: skip
    try:
        found = await db(service.topics, project, *window)
    except KeelError as error:
        context["problem"] = _problem(error)
    else:
        context["topics"] = found
        labels = {t["topic"]: t["label"] for t in found["topics"]}
        context["map"] = topic_map(found["points"], labels)
        context["palette"] = PALETTE
        try:
            # The newest tenth of the window against the rest of it.
            recent = (end - int(hours * HOUR_US / 10), end)
            context["anomalies"] = await db(service.anomalies, project, (window[0], recent[0]),
                                            recent)  # fmt: skip
        except KeelError as error:
            context["anomalies_problem"] = _problem(error)
    alerts = await db(c.services.audit.list, project, action="insights.drift", limit=20)
    context["alerts"] = [a.as_dict() for a in alerts]
    return page(c.request, "insights.html", console=c, **context)


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
