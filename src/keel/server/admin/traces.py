"""/api/traces and /api/stats: find traces, read one as a span tree, score it, aggregate.

Every query is inside the caller's project, so another project's trace is a 404.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import SQLAlchemyError

from keel.auth.keys import Principal
from keel.errors import InvalidRequest, NotFound, ServiceUnavailable
from keel.server.deps import ServicesDep, require
from keel.server.openai.protocol import ErrorResponse
from keel.server.responses import json_response
from keel.server.services import Services
from keel.tracing.stats import GroupBy
from keel.tracing.store import TraceFilter

router = APIRouter(tags=["traces"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid filter, time or cursor"},
    404: {"model": ErrorResponse, "description": "No such trace in this project"},
}
TRACE_ID_PATTERN = r"^[0-9a-f]{32}$"
TraceId = Annotated[str, Path(pattern=TRACE_ID_PATTERN, description="Trace id (X-Keel-Trace-Id).")]
_RELATIVE = re.compile(r"^(\d{1,9})([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_MAX_US = 253_402_300_799_000_000  # the end of year 9999
Text = Annotated[str | None, Query(max_length=256)]
TimeParam = Annotated[
    str | None,
    Query(max_length=64, description="ISO 8601 time (UTC unless it says), or an age: 15m, 1h, 7d."),
]


def parse_time(value: str | None, param: str, now_us: int) -> int | None:
    """Microseconds since the epoch for an ISO time or an age ('1h' ago); garbage is a 400."""
    if value is None:
        return None
    relative = _RELATIVE.match(value)
    if relative:
        return max(0, now_us - int(relative[1]) * _UNITS[relative[2]] * 1_000_000)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"invalid time {value[:64]!r}; write an ISO 8601 time such as "
            "2026-11-30T12:00:00Z, or an age such as 15m, 1h or 7d",
            param=param,
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return min(max(0, int(moment.timestamp() * 1_000_000)), _MAX_US)


def _clean(value: str | None, param: str) -> str | None:
    if value is not None and "\x00" in value:
        raise InvalidRequest("the value contains a NUL character", param=param)
    return value


def _metadata(pairs: list[str] | None) -> dict[str, str]:
    found: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", key) or "\x00" in value:
            raise InvalidRequest(
                f"invalid metadata filter {pair[:80]!r}; write NAME=VALUE (NAME as sent in "
                "an X-Keel-Metadata-NAME header, lower case)",
                param="metadata",
            )
        found[key.lower()] = value
    return found


async def _db(function: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return await asyncio.to_thread(function, *args, **kwargs)
    except SQLAlchemyError as exc:
        raise ServiceUnavailable(
            f"the trace store is not answering ({exc.__class__.__name__}); retry shortly"
        ) from None


# Response models


class TraceSummary(BaseModel):
    trace_id: str
    project_id: str
    key_id: str | None
    start_us: int
    start_time: str
    duration_ms: float
    ttft_ms: float | None
    operation: str
    model: str | None
    route: str | None
    target: str | None
    provider: str | None
    user: str | None
    session_id: str | None
    prompt_name: str | None
    prompt_version: int | None
    status: str
    error_type: str | None
    http_status: int
    attempts: int
    input_tokens: int | None
    output_tokens: int | None
    cost: float | None
    metadata: dict[str, str]
    input_sha256: str | None
    output_sha256: str | None
    input_bytes: int | None
    output_bytes: int | None
    guard_policy: str | None = None
    guard_action: Literal["allow", "flag", "redact", "block"] | None = None
    cache: Literal["hit-exact", "hit-semantic", "miss"] | None = None
    saved_cost: float | None = None
    saved_ms: float | None = None
    input_preview: str | None
    output_preview: str | None


class TracePage(BaseModel):
    data: list[TraceSummary]
    next_cursor: str | None


class SpanNode(BaseModel):
    span_id: str
    parent_id: str | None
    name: str
    kind: str
    start_us: int
    end_us: int
    duration_ms: float
    status: str
    attributes: dict[str, Any]
    children: list[SpanNode]


class Score(BaseModel):
    id: int
    name: str
    kind: Literal["numeric", "categorical", "boolean"]
    value: bool | float | str
    comment: str | None
    source: Literal["human", "evaluator", "api"]
    author: str
    created_time: str


class TraceDetail(TraceSummary):
    input: str | None
    output: str | None
    spans: list[SpanNode]
    scores: list[Score]


class NewScore(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,100}$", description="What is scored.")
    value: bool | float | str = Field(
        description="A number, a category (string, up to 200 characters) or a boolean."
    )
    comment: str | None = Field(None, max_length=2000)
    source: Literal["human", "evaluator", "api"] = "api"


class OnlineScore(BaseModel):
    count: int = Field(description="Online evaluation scores of this scorer in the row.")
    mean: float | None
    passed: int = Field(description="Scores that met the scorer's threshold.")
    verdicts: int = Field(description="Scores that carry a pass/fail verdict.")
    pass_rate: float | None = Field(description="passed / verdicts; null without verdicts.")


class StatsRow(BaseModel):
    bucket_start_us: int
    bucket_start: str
    group: str | None
    requests: int
    errors: int
    error_rate: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    ttft_p99_ms: float | None
    input_tokens: int
    output_tokens: int
    cost: float
    cache_lookups: int
    cache_hits: int
    cache_hit_rate: float
    saved_cost: float
    saved_ms: float
    guard_blocks: int
    guard_flags: int
    failed_attempts: int = Field(
        description="Upstream attempts that failed, counted against the target that failed "
        "(by model) or where their request counts, even when a retry or fallback saved it."
    )
    online_scores: dict[str, OnlineScore] = Field(
        default_factory=dict,
        description="Per online scorer (by metric name): the scores the online evaluation "
        "rules attached to this row's traces (GET/PUT /api/evals/online).",
    )


class PruneRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    older_than: str | None = Field(
        None, max_length=64, description="Traces started before this: an age (30d) or ISO time."
    )
    before_us: int | None = Field(
        None, ge=0, le=_MAX_US, description="Or the same as microseconds since the epoch."
    )
    dry_run: bool = Field(False, description="Only count what would be deleted.")
    limit: int = Field(10_000, ge=1, le=100_000, description="Most traces deleted by this call.")


class PruneResult(BaseModel):
    before_us: int
    before: str
    matched: int | None = Field(description="Traces started before then (dry runs only).")
    deleted: int
    more: bool = Field(description="Whether more may be left: call again to go on.")


class StatsResponse(BaseModel):
    since_us: int
    until_us: int
    bucket_seconds: int
    by: str
    data: list[StatsRow]


def score_fields(body: NewScore) -> dict[str, Any]:
    """The stored columns of a score; a category over 200 characters is a 400."""
    value = body.value
    if isinstance(value, bool):
        return {"kind": "boolean", "flag": value, "number": float(value), "label": None}
    if isinstance(value, float | int):
        return {"kind": "numeric", "number": float(value), "flag": None, "label": None}
    if len(value) > 200 or "\x00" in value:
        raise InvalidRequest("a categorical value is at most 200 characters", param="value")
    return {"kind": "categorical", "label": value, "number": None, "flag": None}


async def add_score(
    services: Services, principal: Principal, trace_id: str, body: NewScore
) -> Response:
    """Store a score on a trace of the caller's project (it may still be in the queue)."""
    fields = score_fields(body)
    project = principal.project_id
    pending = services.tracing.recorder.recent(trace_id) == project
    if not pending and not await _db(services.tracing.exists, project, trace_id):
        raise NotFound(f"no trace {trace_id} in this project", param="trace_id")
    score = {**fields, "name": body.name, "comment": _clean(body.comment, "comment"),
             "source": body.source, "author": f"key:{principal.key_id}"}  # fmt: skip
    saved = await _db(services.tracing.add_score, project, trace_id, score)
    return json_response(saved, status=201)


# Routes


@router.get(
    "/traces",
    summary="List traces, newest first, with filters",
    response_model=TracePage,
    responses=_ERRORS,
)
async def list_traces(
    services: ServicesDep,
    principal: Annotated[Principal, require("traces:read")],
    since: TimeParam = None,
    until: TimeParam = None,
    model: Annotated[
        str | None, Query(max_length=200, description="Requested model, route or version.")
    ] = None,
    key: Annotated[str | None, Query(max_length=32, description="API key id.")] = None,
    user: Annotated[str | None, Query(max_length=256, description="The request's user.")] = None,
    session: Annotated[str | None, Query(max_length=256, description="X-Keel-Session-Id.")] = None,
    prompt: Annotated[
        str | None, Query(max_length=120, description="Prompt NAME or NAME@VERSION.")
    ] = None,
    status: Annotated[Literal["ok", "error"] | None, Query()] = None,
    guard_action: Annotated[
        Literal["allow", "flag", "redact", "block"] | None,
        Query(description="The strongest action the guard policy took."),
    ] = None,
    cache: Annotated[Literal["hit-exact", "hit-semantic", "miss"] | None, Query()] = None,
    min_latency_ms: Annotated[float | None, Query(ge=0, le=1e9, allow_inf_nan=False)] = None,
    min_cost: Annotated[float | None, Query(ge=0, le=1e12, allow_inf_nan=False)] = None,
    metadata: Annotated[
        list[str] | None, Query(max_length=16, description="NAME=VALUE (repeatable).")
    ] = None,
    q: Annotated[
        str | None, Query(max_length=200, description="Text in the request or response.")
    ] = None,
    cursor: Annotated[str | None, Query(max_length=200, description="next_cursor.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    now = time.time_ns() // 1000
    for name, value in (("model", model), ("key", key), ("user", user), ("session", session),
                        ("prompt", prompt), ("q", q), ("cursor", cursor)):  # fmt: skip
        _clean(value, name)
    filters = TraceFilter(
        since_us=parse_time(since, "since", now),
        until_us=parse_time(until, "until", now),
        model=model,
        key_id=key,
        user=user,
        session_id=session,
        prompt=prompt,
        status=status,
        guard_action=guard_action,
        cache=cache,
        min_latency_ms=min_latency_ms,
        min_cost=min_cost,
        metadata=_metadata(metadata),
        text=q or None,
    )
    page, next_cursor = await _db(
        services.tracing.list, principal.project_id, filters, limit=limit, cursor=cursor
    )
    return json_response({"data": page, "next_cursor": next_cursor})


@router.get(
    "/traces/{trace_id}",
    summary="Get one trace with its spans as a tree and its scores",
    response_model=TraceDetail,
    responses=_ERRORS,
)
async def get_trace(
    services: ServicesDep,
    principal: Annotated[Principal, require("traces:read")],
    trace_id: TraceId,
) -> Response:
    found = await _db(services.tracing.get, principal.project_id, trace_id)
    if found is None:
        hint = ""
        if services.tracing.recorder.recent(trace_id) == principal.project_id:
            hint = " yet (it is being written; retry in a moment)"
        raise NotFound(f"no trace {trace_id} in this project{hint}", param="trace_id")
    return json_response(found)


@router.post(
    "/traces/{trace_id}/scores",
    summary="Score a trace (a number, a category or a boolean)",
    response_model=Score,
    status_code=201,
    responses=_ERRORS,
)
async def score_trace(
    services: ServicesDep,
    principal: Annotated[Principal, require("traces:write")],
    trace_id: TraceId,
    body: NewScore,
) -> Response:
    return await add_score(services, principal, trace_id, body)


@router.post(
    "/traces/prune",
    summary="Delete traces of every project started before a time (retention, by hand)",
    response_model=PruneResult,
    responses={400: _ERRORS[400]},
)
async def prune_traces(
    services: ServicesDep,
    principal: Annotated[Principal, require("retention:write")],
    body: PruneRequest,
) -> Response:
    """Deletes at most `limit` traces per call, oldest first, in short transactions;
    `keel traces prune` calls it until nothing is left."""
    if (body.older_than is None) == (body.before_us is None):
        raise InvalidRequest(
            "give either older_than (an age such as 30d, or an ISO time) or before_us",
            param="older_than",
        )
    now = time.time_ns() // 1000
    before_us = body.before_us
    if before_us is None:
        before_us = parse_time(body.older_than, "older_than", now) or 0
    tracing = services.tracing
    before = _iso(before_us)
    if body.dry_run:
        matched = await _db(tracing.count_before, before_us)
        return json_response({"before_us": before_us, "before": before, "matched": matched,
                              "deleted": 0, "more": matched > 0})  # fmt: skip
    try:
        deleted = await tracing.prune(before_us, body.limit)
    except SQLAlchemyError as exc:
        raise ServiceUnavailable(
            f"the trace store is not answering ({exc.__class__.__name__}); retry shortly"
        ) from None
    if deleted:
        after = {"before": before, "deleted": deleted}
        await asyncio.to_thread(services.audit.add, principal, "traces.prune", "traces", "*",
                                after=after)  # fmt: skip
    return json_response({"before_us": before_us, "before": before, "matched": None,
                          "deleted": deleted, "more": deleted == body.limit})  # fmt: skip


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat().replace("+00:00", "Z")


@router.get(
    "/stats",
    summary="Request aggregates per time bucket: counts, errors, latency, TTFT, tokens, cost",
    response_model=StatsResponse,
    responses={400: _ERRORS[400]},
)
async def get_stats(
    services: ServicesDep,
    principal: Annotated[Principal, require("traces:read")],
    since: TimeParam = "24h",
    until: TimeParam = None,
    bucket: Annotated[
        int,
        Query(ge=0, le=366 * 86400, description="Bucket length in seconds; 0: the whole range."),
    ] = 3600,
    by: Annotated[GroupBy, Query(description="Group rows by this too.")] = "none",
) -> Response:
    now = time.time_ns() // 1000
    since_us = parse_time(since, "since", now) or 0
    until_us = parse_time(until, "until", now) or now
    if until_us <= since_us:
        raise InvalidRequest("'until' must be after 'since'", param="until")
    if bucket and (until_us - since_us) // (bucket * 1_000_000) > 10_000:
        raise InvalidRequest(
            "more than 10000 buckets; widen 'bucket' or narrow the time range", param="bucket"
        )
    rows = await _db(
        services.tracing.stats,
        principal.project_id,
        since_us=since_us,
        until_us=until_us,
        bucket_s=bucket,
        group_by=by,
    )
    for row in rows:
        seconds = row["bucket_start_us"] // 1_000_000
        row["bucket_start"] = datetime.fromtimestamp(seconds, UTC).isoformat()
    return json_response(
        {"since_us": since_us, "until_us": until_us, "bucket_seconds": bucket, "by": by,
         "data": rows}
    )  # fmt: skip
