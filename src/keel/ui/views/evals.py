"""Evaluation in the console: datasets and their items (each linked to its source trace),
experiment runs with per-item results, and a comparison of runs with paired differences,
per-item diffs and a chart of each run's score distribution."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from markupsafe import Markup, escape
from pydantic import ValidationError

from keel.errors import KeelError
from keel.evals.compare import Run, distribution
from keel.evals.datasets import NAME_PATTERN
from keel.evals.items import ItemIn, NewItem, to_new_item
from keel.evals.service import RUN_ID_PATTERN
from keel.server.admin.evals import eval_service
from keel.ui.web import Console, UiError, UiRoute, db, page, redirect, ui_require

router = APIRouter(route_class=UiRoute)

Name = Annotated[str, Path(pattern=NAME_PATTERN)]
RunId = Annotated[str, Path(pattern=RUN_ID_PATTERN)]
BINS = 10
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 640, 200, 40, 28, 10


def histogram(key: str, metric: str, runs: list[Run]) -> Markup:
    """Grouped bars: how many items of each run scored in each tenth of the metric's range."""
    counts = [distribution(run, metric, BINS) for run in runs]
    top = max((c for row in counts for c in row), default=0) or 1
    width, height = WIDTH - LEFT - 10, HEIGHT - TOP - BOTTOM
    slot = width / BINS
    bar = slot * 0.8 / max(1, len(runs))
    title = f"Distribution of {metric} over items"
    pairs = zip(runs, counts, strict=True)
    desc = "; ".join(f"{r.title}: {', '.join(map(str, c))}" for r, c in pairs)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{key}-title {key}-desc">',
        f'<title id="{key}-title">{escape(title)}</title>',
        f'<desc id="{key}-desc">Items per tenth of the range, per run: {escape(desc)}</desc>',
        f'<text class="axis" x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end">{top}</text>',
        f'<text class="axis" x="{LEFT - 6}" y="{TOP + height + 4}" text-anchor="end">0</text>',
        f'<text class="axis" x="{LEFT}" y="{HEIGHT - 8}">low</text>',
        f'<text class="axis" x="{WIDTH - 10}" y="{HEIGHT - 8}" text-anchor="end">high</text>',
    ]
    for r, row in enumerate(counts):
        for i, count in enumerate(row):
            h = height * count / top
            x = LEFT + i * slot + slot * 0.1 + r * bar
            parts.append(
                f'<rect class="dist s{r % 8}" x="{x:.1f}" y="{TOP + height - h:.1f}" '
                f'width="{bar:.1f}" height="{h:.1f}"><title>{escape(runs[r].title)}, '
                f"bin {i + 1}: {count}</title></rect>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # every value above is escaped or a number


@router.get("/datasets")
async def datasets(c: Annotated[Console, ui_require("datasets:read")]) -> Response:
    found = await db(eval_service(c.services).datasets.list, c.principal.project_id)
    return page(c.request, "evals_datasets.html", console=c, datasets=found)


@router.get("/datasets/{name}")
async def dataset(
    c: Annotated[Console, ui_require("datasets:read")],
    name: Name,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> Response:
    service = eval_service(c.services).datasets
    try:
        info = await db(service.get, c.principal.project_id, name)
        chosen, items = (None, []) if info.latest_version == 0 else await db(
            service.items, c.principal.project_id, name, version, limit=500)  # fmt: skip
    except KeelError as exc:
        raise UiError(exc.status, exc.message) from None
    return page(c.request, "evals_dataset.html", console=c, dataset=info, version=chosen,
                items=items)  # fmt: skip


def _form_item(form: dict[str, str]) -> NewItem:
    """One item typed in the console: a user message, and optionally what it should get."""
    try:
        item = ItemIn.model_validate({"input": form.get("input", ""),
                                      "expected": form.get("expected") or None})  # fmt: skip
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        raise UiError(400, f"invalid item: {message}") from None
    return to_new_item(item)


@router.post("/datasets")
async def create_dataset(c: Annotated[Console, ui_require("datasets:write")]) -> Response:
    form = await c.form()
    name = form.get("name", "").strip()
    if not re.fullmatch(NAME_PATTERN, name):
        raise UiError(400, f"invalid dataset name {name[:100]!r}: letters, digits, '.', '_' "
                      "and '-', starting with a letter or digit")  # fmt: skip
    items = [_form_item(form)] if form.get("input", "").strip() else []
    try:
        await db(eval_service(c.services).datasets.create, c.principal.project_id, name,
                 description=form.get("description", "")[:2000], items=items,
                 source="console", created_by=c.principal.key_id)  # fmt: skip
    except KeelError as exc:
        raise UiError(exc.status, exc.message) from None
    return redirect(f"/ui/datasets/{name}")


@router.post("/datasets/{name}/items")
async def add_item(c: Annotated[Console, ui_require("datasets:write")], name: Name) -> Response:
    item = _form_item(await c.form())
    try:
        version = await db(eval_service(c.services).datasets.add_items, c.principal.project_id,
                           name, [item], source="console",
                           created_by=c.principal.key_id)  # fmt: skip
    except KeelError as exc:
        raise UiError(exc.status, exc.message) from None
    return redirect(f"/ui/datasets/{name}?version={version.version}#items")


@router.get("/experiments")
async def experiments(c: Annotated[Console, ui_require("experiments:read")]) -> Response:
    runs, more = await db(eval_service(c.services).page, c.principal.project_id, limit=100)
    return page(c.request, "evals_runs.html", console=c, runs=runs, more=more)


@router.get("/experiments/compare")
async def comparison(
    c: Annotated[Console, ui_require("experiments:read")],
    run: Annotated[list[str], Query(max_length=10)],
    confidence: Annotated[float, Query(ge=0.5, lt=1)] = 0.95,
) -> Response:
    service = eval_service(c.services)
    if len(run) < 2:
        raise UiError(400, "pick two runs or more to compare (the first is the baseline)")
    try:
        result = await db(service.compare, c.principal.project_id, run, confidence)
        runs = [await db(service.run, await db(service.resolve, c.principal.project_id, ref))
                for ref in run]  # fmt: skip
    except KeelError as exc:
        raise UiError(exc.status, exc.message) from None
    charts = [(m, histogram(f"dist-{i}", m, runs)) for i, m in enumerate(result["metrics"])]
    changed = [row for row in result["items"] if row["changed"]]
    return page(c.request, "evals_compare.html", console=c, result=result, charts=charts,
                changed=changed)  # fmt: skip


@router.get("/experiments/{run_id}")
async def run_page(c: Annotated[Console, ui_require("experiments:read")],
                   run_id: RunId) -> Response:  # fmt: skip
    service = eval_service(c.services)
    try:
        job = await db(service.get, c.principal.project_id, run_id)
        run = await db(service.run, job)
    except KeelError as exc:
        raise UiError(exc.status, exc.message) from None
    metrics = ["pass_rate", *(s["name"] for s in run.scorers)]
    charts = [(m, histogram(f"dist-{i}", m, [run])) for i, m in enumerate(metrics)]
    items = sorted(run.items.values(), key=lambda s: s.item_id)
    return page(c.request, "evals_run.html", console=c, job=job, run=run, metrics=metrics,
                charts=charts, items=items)  # fmt: skip
