"""POST /v1/jobs/{job_id}/items/{item_id}/run: one item of a job (an experiment's) run for
Keel's Ray actors.

Like the batch line route (batch_items.py), its credential is an item token the Ray
executor signed for the item, not an API key: the item runs through its kind here, so its
call goes through `Gateway.handle` as the job's owner, and the executor holding the job's
lease records the outcome; this route writes nothing itself.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request

from keel.errors import AuthenticationFailed, InvalidRequest, NotFound
from keel.jobs.executor import ItemFailed
from keel.jobs.ray_executor import ON_RAY, item_from_body
from keel.jobs.system import JobSystem
from keel.server.deps import ServicesDep, bearer_token
from keel.server.openai.files import job_system

router = APIRouter(tags=["jobs"])  # included by batches.py, under /v1


async def item_token(request: Request) -> str:
    token = bearer_token(request)
    if token is None:
        raise AuthenticationFailed(
            "missing item token; only Keel's Ray actors call this route, with the token "
            "signed for the item"
        )
    return token


def signed_key(
    system: JobSystem, token: str, job_id: str, item_id: int, body: bytes, *, signed_for: str
) -> str:
    """The key the item runs as, when the token is the one the Ray executor signed for this
    job, item and body; `signed_for` names them in the refusal."""
    key_id = system.signer.verify(token, job_id, item_id, body) if system.signer else None
    if key_id is None:
        raise AuthenticationFailed(
            f"the item token does not match this {signed_for}; only Keel's Ray executor "
            "calls this route, with the token it signed for the item"
        )
    return key_id


@router.post(
    "/jobs/{job_id}/items/{item_id}/run",
    summary="Run one job item (called by Keel's Ray actors, with a token signed for it)",
)
async def run_item(
    services: ServicesDep,
    token: Annotated[str, Depends(item_token)],
    request: Request,
    job_id: str,
    item_id: int,
) -> dict[str, Any]:
    system = job_system(services)
    body = await request.body()
    key_id = signed_key(system, token, job_id, item_id, body, signed_for="job, item and payload")
    job = await asyncio.to_thread(system.store.get, job_id)
    if job is None or job.key_id != key_id:
        raise NotFound(f"no job '{job_id}'", param="job_id")
    kind = system.executor.kinds.get(job.kind)
    if kind is None or job.kind not in ON_RAY:
        raise InvalidRequest(
            f"jobs of kind '{job.kind}' do not run their items through this route "
            f"(those that do: {sorted(ON_RAY)})",
            param="job_id",
        )
    try:
        item = item_from_body(job_id, item_id, body)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise InvalidRequest(
            "the body is not a job item {key, ordinal, attempts, payload}", param="body"
        ) from None
    try:
        result = await kind.run_item(job, item)
    except ItemFailed as failure:
        return {"ok": False, **failure.as_dict()}
    return {"ok": True, "result": result}
