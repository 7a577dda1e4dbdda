"""/api/cache: the response cache's statistics, and purging entries of the caller's project."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError

from keel.auth.keys import Principal
from keel.errors import ServiceUnavailable
from keel.server.deps import ServicesDep, require
from keel.server.openai.protocol import ErrorResponse

router = APIRouter(tags=["cache"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorResponse, "description": "The cache backend (Redis) is not answering"},
}


class CacheStats(BaseModel):
    backend: str = Field(description="memory or redis")
    entries: int
    bytes: int
    hits_exact: int
    hits_semantic: int
    misses: int
    evictions: int


class PurgeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    route: str | None = Field(None, max_length=200, description="Only entries of this route.")
    prompt: str | None = Field(
        None,
        max_length=200,
        description="Only entries made with this prompt: NAME (every version) or NAME@VERSION.",
    )
    entry_id: str | None = Field(
        None, pattern=r"^[0-9a-f]{32}$", description="Only this entry (its id, from a trace)."
    )


class PurgeResult(BaseModel):
    purged: int


def _unavailable(exc: Exception) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"the cache backend is not answering ({exc.__class__.__name__}); retry shortly, "
        "and check that Redis at redis_url is up"
    )


@router.get("/cache/stats", summary="Cache entries, size, hits and misses of your project",
            response_model=CacheStats, responses=_ERRORS)  # fmt: skip
async def cache_stats(
    services: ServicesDep, principal: Annotated[Principal, require("cache:read")]
) -> dict[str, Any]:
    try:
        return await services.cache.stats(principal.project_id)
    except (RedisError, OSError) as exc:
        raise _unavailable(exc) from None


@router.post("/cache/purge", summary="Delete cached answers of your project",
             response_model=PurgeResult, responses=_ERRORS)  # fmt: skip
async def cache_purge(
    request: PurgeRequest,
    services: ServicesDep,
    principal: Annotated[Principal, require("cache:write")],
) -> dict[str, int]:
    """Every given filter must match (none given: the whole project's cache)."""
    try:
        purged = await services.cache.purge(
            principal.project_id, request.route, request.prompt, request.entry_id
        )
    except (RedisError, OSError) as exc:
        raise _unavailable(exc) from None
    target = request.entry_id or request.route or request.prompt or "*"
    after = {**request.model_dump(exclude_none=True), "purged": purged}
    await asyncio.to_thread(services.audit.add, principal, "cache.purge", "cache", target,
                            after=after)  # fmt: skip
    return {"purged": purged}
