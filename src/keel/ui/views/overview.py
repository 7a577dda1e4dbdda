"""The overview: request charts over a chosen time range, grouped by route or model
version, summary tiles, online evaluation scores and the most frequent recent errors.
Built on /api/stats' SQL."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from keel.tracing.store import TraceFilter
from keel.ui import format as fmt
from keel.ui.charts import PALETTE_SIZE, Chart, Series
from keel.ui.web import Console, UiRoute, db, page, ui_require

router = APIRouter(route_class=UiRoute)

# range → (seconds, bucket seconds)
RANGES: dict[str, tuple[int, int]] = {
    "1h": (3600, 60),
    "6h": (6 * 3600, 600),
    "24h": (86400, 3600),
    "7d": (7 * 86400, 6 * 3600),
    "30d": (30 * 86400, 86400),
}
GROUPS = {"none": "Everything", "route": "Route", "model": "Model version"}
ERROR_SAMPLE = 100
# Stats columns the gateway's guard and cache steps add; charted only when present.
CACHE_RATE_KEYS = ("cache_hit_rate",)
GUARD_BLOCK_KEYS = ("guard_blocks", "guard_blocked")


def _first(row: dict[str, Any], keys: tuple[str, ...]) -> Any:
    if keys == CACHE_RATE_KEYS and row.get("cache_lookups") == 0:
        return None  # no request consulted the cache: no rate, rather than 0%
    for key in keys:
        if key in row:
            return row[key]
    return None


def _has(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> bool:
    return any(key in row for row in rows for key in keys)


def build_charts(
    rows: list[dict[str, Any]], since_us: int, until_us: int, bucket_s: int
) -> tuple[list[Chart], list[str], int]:
    """Charts from stats rows; returns them, the groups shown and how many were left out."""
    bucket_us = bucket_s * 1_000_000
    first = since_us // bucket_us * bucket_us
    buckets = list(range(first, until_us, bucket_us)) or [first]
    index = {start: i for i, start in enumerate(buckets)}
    volume: Counter[str] = Counter()
    for row in rows:
        volume[str(row["group"])] += row["requests"]
    groups = [name for name, _ in volume.most_common(PALETTE_SIZE)]
    hidden = len(volume) - len(groups)
    by_group: dict[str, dict[int, dict[str, Any]]] = {g: {} for g in groups}
    for row in rows:
        group = str(row["group"])
        if group in by_group and row["bucket_start_us"] in index:
            by_group[group][index[row["bucket_start_us"]]] = row

    def chart(
        key: str,
        title: str,
        value: Callable[[dict[str, Any]], float | None],
        show: Callable[[float | None], str],
        empty: float | None = None,
    ) -> Chart:
        series = []
        for group in groups:
            found = by_group[group]
            values = [value(found[i]) if i in found else empty for i in range(len(buckets))]
            series.append(Series(group if group != "all" else title, values))
        return Chart(key, title, buckets, series, show)

    charts = [
        chart("requests", "Requests", lambda r: r["requests"], fmt.count, 0.0),
        chart("error-rate", "Error rate", lambda r: r["error_rate"], fmt.pct),
        chart("latency-p50", "Latency p50", lambda r: r["latency_p50_ms"], fmt.ms),
        chart("latency-p95", "Latency p95", lambda r: r["latency_p95_ms"], fmt.ms),
        chart("ttft-p50", "Time to first token p50", lambda r: r["ttft_p50_ms"], fmt.ms),
        chart("ttft-p95", "Time to first token p95", lambda r: r["ttft_p95_ms"], fmt.ms),
        chart("tokens", "Tokens (input + output)",
              lambda r: r["input_tokens"] + r["output_tokens"], fmt.count, 0.0),
        chart("cost", "Cost", lambda r: r["cost"], fmt.cost, 0.0),
    ]  # fmt: skip
    if _has(rows, CACHE_RATE_KEYS):
        charts.append(
            chart("cache-hit-rate", "Cache hit rate", lambda r: _first(r, CACHE_RATE_KEYS), fmt.pct)
        )
    if _has(rows, GUARD_BLOCK_KEYS):
        charts.append(
            chart(
                "guard-blocks",
                "Guard blocks",
                lambda r: _first(r, GUARD_BLOCK_KEYS) or 0,
                fmt.count,
                0.0,
            )
        )
    return charts, groups, hidden


SUMMED = ("requests", "errors", "input_tokens", "output_tokens", "cost", "cache_lookups",
          "cache_hits", *GUARD_BLOCK_KEYS)  # fmt: skip


def totals(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The whole range's sums, from the chart rows (absent columns count 0)."""
    return {key: sum(row.get(key) or 0 for row in rows) for key in SUMMED}


def online_totals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Online evaluation over the whole range, per group and scorer: the buckets' scores
    summed (the mean weighted by each bucket's count)."""
    sums: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        for name, score in (row.get("online_scores") or {}).items():
            total = sums.setdefault((str(row["group"]), name), [0, 0.0, 0, 0])
            total[0] += score["count"]
            total[1] += (score["mean"] or 0.0) * score["count"]
            total[2] += score["passed"]
            total[3] += score["verdicts"]
    found = []
    for (group, name), (n, mean_sum, passed, verdicts) in sorted(sums.items()):
        mean = mean_sum / n if n else None
        rate = passed / verdicts if verdicts else None
        found.append({"group": group, "name": name, "count": int(n), "mean": mean,
                      "pass_rate": rate, "shown_mean": fmt.DASH if mean is None else f"{mean:.4g}",
                      "shown_pass_rate": fmt.pct(rate)})  # fmt: skip
    return found


def top_errors(traces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Recent errors counted by (type, HTTP status, route), most frequent first."""
    counts: Counter[tuple[str, int, str]] = Counter()
    latest: dict[tuple[str, int, str], dict[str, Any]] = {}
    for trace in traces:
        key = (trace["error_type"] or "error", trace["http_status"], trace["route"] or fmt.DASH)
        counts[key] += 1
        latest.setdefault(key, trace)
    return [
        {"error_type": k[0], "http_status": k[1], "route": k[2], "count": n,
         "last": latest[k]}
        for k, n in counts.most_common(10)
    ]  # fmt: skip


@router.get("/")  # /ui redirects here (the router adds the slash)
async def overview(
    c: Annotated[Console, ui_require("traces:read")],
    span: Annotated[Literal["1h", "6h", "24h", "7d", "30d"], Query(alias="range")] = "24h",
    by: Annotated[Literal["none", "route", "model"], Query()] = "none",
) -> Response:
    seconds, bucket_s = RANGES[span]
    until_us = time.time_ns() // 1000
    since_us = until_us - seconds * 1_000_000
    project = c.principal.project_id
    tracing = c.services.tracing
    # Two independent reads, each in its own worker thread. The tiles are sums of the chart
    # rows: a second whole-range query for overall percentiles would double the cost of the
    # page, and the percentile charts show them per bucket.
    rows, errors = await asyncio.gather(
        db(tracing.stats, project, since_us=since_us, until_us=until_us, bucket_s=bucket_s,
           group_by=by),
        db(tracing.list, project,
           TraceFilter(since_us=since_us, status="error"), limit=ERROR_SAMPLE),
    )  # fmt: skip
    charts, groups, hidden = build_charts(rows, since_us, until_us, bucket_s)
    total = totals(rows)
    tiles = [
        ("Requests", fmt.count(total["requests"])),
        ("Errors", fmt.count(total["errors"])),
        ("Error rate", fmt.pct(total["errors"] / total["requests"] if total["requests"] else None)),
        ("Tokens", fmt.count(total["input_tokens"] + total["output_tokens"])),
        ("Cost", fmt.cost(total["cost"])),
    ]
    if _has(rows, ("cache_lookups",)):
        lookups = total["cache_lookups"]
        tiles.append(
            ("Cache hit rate", fmt.pct(total["cache_hits"] / lookups if lookups else None))
        )
    if _has(rows, GUARD_BLOCK_KEYS):
        tiles.append(("Guard blocks", fmt.count(total["guard_blocks"] + total["guard_blocked"])))
    return page(
        c.request, "overview.html", console=c, charts=charts, tiles=tiles, groups=groups,
        hidden=hidden, requests=total["requests"], online=online_totals(rows),
        errors=top_errors(errors[0]), error_sample=ERROR_SAMPLE,
        ranges=list(RANGES), span=span, by=by, group_names=GROUPS,
    )  # fmt: skip
