"""Traces: the filterable, cursor-paged table (the filters of GET /api/traces) and one
trace with its span waterfall, messages as a chat, guard verdicts, scores and a score form."""

from __future__ import annotations

import math
import re
import time
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import ValidationError

from keel.server.admin.traces import TRACE_ID_PATTERN, NewScore, add_score, parse_time
from keel.tracing.store import TraceFilter
from keel.ui.web import Console, UiError, UiRoute, db, page, redirect, ui_require

router = APIRouter(route_class=UiRoute)

TraceId = Annotated[str, Path(pattern=TRACE_ID_PATTERN)]
Text = Annotated[str | None, Query(max_length=256)]
GUARD_ACTIONS = ("allow", "flag", "redact", "block")
CACHE_STATES = ("hit-exact", "hit-semantic", "miss")
GUARD_SPANS = ("keel.guard.input", "keel.guard.output")
VERDICTS = "keel.guard.verdicts"
_METADATA = re.compile(r"^([A-Za-z0-9_.-]{1,64})=(.*)$")


def _metadata(pairs: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for pair in pairs:
        match = _METADATA.match(pair.strip())
        if not match:
            raise UiError(400, f"invalid metadata filter {pair[:80]!r}; write NAME=VALUE")
        found[match[1].lower()] = match[2]
    return found


@router.get("/traces")
async def traces(
    c: Annotated[Console, ui_require("traces:read")],
    since: Annotated[str | None, Query(max_length=64)] = None,
    until: Annotated[str | None, Query(max_length=64)] = None,
    model: Annotated[str | None, Query(max_length=200)] = None,
    key: Annotated[str | None, Query(max_length=32)] = None,
    user: Text = None,
    session: Text = None,
    prompt: Annotated[str | None, Query(max_length=120)] = None,
    status: Annotated[Literal["", "ok", "error"], Query()] = "",
    min_latency_ms: Annotated[float | None, Query(ge=0, le=1e9, allow_inf_nan=False)] = None,
    min_cost: Annotated[float | None, Query(ge=0, le=1e12, allow_inf_nan=False)] = None,
    metadata: Annotated[list[str] | None, Query(max_length=16)] = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    guard_action: Annotated[Literal["", "allow", "flag", "redact", "block"], Query()] = "",
    cache: Annotated[Literal["", "hit-exact", "hit-semantic", "miss"], Query()] = "",
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    now = time.time_ns() // 1000
    text_filters = {"since": since, "until": until, "model": model, "key": key, "user": user,
                    "session": session, "prompt": prompt, "q": q}  # fmt: skip
    for name, value in text_filters.items():
        if value is not None and "\x00" in value:
            raise UiError(400, f"filter {name!r} contains a NUL character")
    meta_pairs = [m for m in (metadata or []) if m.strip()]
    filters = TraceFilter(
        since_us=parse_time(since or None, "since", now),
        until_us=parse_time(until or None, "until", now),
        model=model or None, key_id=key or None, user=user or None, session_id=session or None,
        prompt=prompt or None, status=status or None, min_latency_ms=min_latency_ms,
        min_cost=min_cost, metadata=_metadata(meta_pairs), text=q or None,
        guard_action=guard_action or None, cache=cache or None,
    )  # fmt: skip
    rows, next_cursor = await db(
        c.services.tracing.list, c.principal.project_id, filters, limit=limit, cursor=cursor
    )
    current = {k: v for k, v in text_filters.items() if v}
    current.update({k: v for k, v in (("status", status), ("guard_action", guard_action),
                                      ("cache", cache)) if v})  # fmt: skip
    for name, number in (("min_latency_ms", min_latency_ms), ("min_cost", min_cost)):
        if number is not None:
            current[name] = f"{number:g}"
    query: list[tuple[str, str]] = [*current.items(), *(("metadata", m) for m in meta_pairs)]
    if limit != 50:
        query.append(("limit", str(limit)))
    next_url = f"/ui/traces?{urlencode([*query, ('cursor', next_cursor)])}" if next_cursor else None
    return page(
        c.request, "traces.html", console=c, rows=rows, filters=current, metadata=meta_pairs,
        next_url=next_url, first_url=f"/ui/traces?{urlencode(query)}" if cursor else None,
        guard_actions=GUARD_ACTIONS, cache_states=CACHE_STATES,
    )  # fmt: skip


def flatten(nodes: list[dict[str, Any]], depth: int = 0) -> list[dict[str, Any]]:
    """The span tree as rows in start order, each with its depth."""
    rows: list[dict[str, Any]] = []
    for node in nodes:
        rows.append({**node, "depth": depth})
        rows.extend(flatten(node["children"], depth + 1))
    return rows


def waterfall(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with bar positions on one 0-1000 axis from the first start to the last end."""
    if not spans:
        return []
    start = min(s["start_us"] for s in spans)
    total = max(1, max(s["end_us"] for s in spans) - start)
    for span in spans:
        span["bar_x"] = round(1000 * (span["start_us"] - start) / total, 1)
        span["bar_w"] = max(2.0, round(1000 * (span["end_us"] - span["start_us"]) / total, 1))
        span["indent"] = min(span["depth"], 8)
    return spans


def chat_messages(text: str | None) -> list[dict[str, str]] | None:
    """A chat request's stored messages as (role, text) pairs; None when not a chat."""
    if not text or not text.startswith("["):
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, list):
        return None
    messages = []
    for item in value:
        if not isinstance(item, dict):
            return None
        content = item.get("content")
        if not isinstance(content, str):
            content = orjson.dumps(content).decode() if content is not None else ""
        messages.append({"role": str(item.get("role", "?")), "content": content})
    return messages


def guard_verdicts(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Verdicts the guard steps recorded on their spans (keel.guard.input, .output)."""
    found = []
    for span in spans:
        if span["name"] not in GUARD_SPANS:
            continue
        verdicts = span["attributes"].get(VERDICTS)
        if isinstance(verdicts, str):
            try:
                verdicts = orjson.loads(verdicts)
            except orjson.JSONDecodeError:
                verdicts = None
        for verdict in verdicts if isinstance(verdicts, list) else ():
            if isinstance(verdict, dict):
                found.append({"stage": span["name"].removeprefix("keel.guard."), **verdict})
    return found


@router.get("/traces/{trace_id}")
async def trace(c: Annotated[Console, ui_require("traces:read")], trace_id: TraceId) -> Response:
    found = await db(c.services.tracing.get, c.principal.project_id, trace_id)
    if found is None:
        if c.services.tracing.recorder.recent(trace_id) == c.principal.project_id:
            return page(c.request, "trace_pending.html", 404, console=c, trace_id=trace_id)
        raise UiError(404, f"no trace {trace_id} in this project")
    spans = waterfall(flatten(found["spans"]))
    return page(
        c.request, "trace.html", console=c, t=found, spans=spans,
        messages=chat_messages(found.get("input")), verdicts=guard_verdicts(spans),
    )  # fmt: skip


@router.post("/traces/{trace_id}/scores")
async def score(c: Annotated[Console, ui_require("traces:write")], trace_id: TraceId) -> Response:
    form = await c.form()
    kind = form.get("kind", "numeric")
    raw = form.get("value", "").strip()
    value: bool | float | str
    if kind == "boolean":
        value = raw.lower() in ("1", "true", "yes", "on")
    elif kind == "numeric":
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise UiError(400, f"{raw[:40]!r} is not a number; enter e.g. 0.8")
    else:
        value = raw
    try:
        body = NewScore(name=form.get("name", ""), value=value,
                        comment=form.get("comment") or None, source="human")  # fmt: skip
    except ValidationError as exc:
        raise UiError(400, f"invalid score: {exc.errors()[0]['msg']}") from None
    await add_score(c.services, c.principal, trace_id, body)
    return redirect(f"/ui/traces/{trace_id}#scores")
