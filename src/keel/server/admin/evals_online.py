"""/api/evals/online: rules that score a share of a route's live calls in the background
(see keel.evals.online), and the scores they attached to traces, per route."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from keel.auth.keys import Principal
from keel.errors import NotFound
from keel.evals.online import AUTHOR_PREFIX, SOURCE, OnlineEvaluator, Rule
from keel.server.admin.traces import parse_time
from keel.server.deps import ServicesDep, require
from keel.server.services import Services

router = APIRouter(tags=["evaluation"])


async def _run(function: Any, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(function, *args, **kwargs)


def online_evaluator(services: Services) -> OnlineEvaluator:
    """The app's online evaluator, built on first use (started by the lifespan)."""
    found = services.extras.get("evals_online")
    if found is None:
        found = OnlineEvaluator(
            services.database,
            services.tracing,
            lambda: next(iter(services.catalog.embedders), None),
        )
        services.extras["evals_online"] = found
    assert isinstance(found, OnlineEvaluator)
    return found


# -- online evaluation --------------------------------------------------------------------


class OnlineRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sample: float = Field(gt=0, le=1, description="Share of the route's calls scored (0..1]")
    scorers: list[dict[str, Any]] = Field(min_length=1, max_length=10)


@router.get("/evals/online", summary="Online rules, and their scores on live calls since `since`")
async def online_rules(
    services: ServicesDep,
    principal: Annotated[Principal, require("experiments:read")],
    since: Annotated[str, Query(max_length=64, description="ISO time or age: 1h, 7d")] = "24h",
) -> dict[str, Any]:
    online = online_evaluator(services)
    since_us = parse_time(since, "since", time.time_ns() // 1000) or 0
    rules = await _run(online.rules, principal.project_id)
    summary = await _run(
        services.tracing.score_summary, principal.project_id, since_us, SOURCE, f"{AUTHOR_PREFIX}%"
    )
    return {"rules": [r.as_dict() for r in rules], "scores": summary}


@router.put("/evals/online/{route}", summary="Score a share of a route's live calls")
async def put_online_rule(
    services: ServicesDep,
    principal: Annotated[Principal, require("experiments:write")],
    route: Annotated[str, Path(max_length=200)],
    body: OnlineRule,
) -> dict[str, Any]:
    known = services.router.table.names(principal.project_id)
    if route not in known:
        raise NotFound(
            f"unknown route '{route}' (known: {', '.join(known[:10]) or 'none'})",
            param="route",
            code="model_not_found",
        )
    rule: Rule = await _run(
        online_evaluator(services).put, principal.project_id, route, body.sample,
        body.scorers, principal.key_id,
    )  # fmt: skip
    return rule.as_dict()


@router.delete("/evals/online/{route}", summary="Stop scoring a route's live calls")
async def delete_online_rule(
    services: ServicesDep,
    principal: Annotated[Principal, require("experiments:write")],
    route: Annotated[str, Path(max_length=200)],
) -> dict[str, Any]:
    await _run(online_evaluator(services).delete, principal.project_id, route)
    return {"route": route, "deleted": True}
