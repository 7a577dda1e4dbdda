"""POST /v1/batches/{batch_id}/items/{item_id}/run: one batch line run for Keel's Ray actors.

Its credential is an item token the Ray executor signed for the line (keel/jobs/tokens.py),
not an API key: the line runs through `Gateway.handle` as the batch's owner, and the
executor holding the job's lease records the outcome, so this route writes nothing itself.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request

from keel.errors import AuthenticationFailed, InvalidRequest
from keel.jobs.executor import ItemFailed
from keel.server.deps import ServicesDep, bearer_token
from keel.server.openai.files import job_system

router = APIRouter(tags=["jobs"])  # included by batches.py, under /v1


async def item_token(request: Request) -> str:
    token = bearer_token(request)
    if token is None:
        raise AuthenticationFailed(
            "missing item token; this route runs batch lines for Keel's Ray actors only"
        )
    return token


@router.post(
    "/batches/{batch_id}/items/{item_id}/run",
    summary="Run one batch line (called by Keel's Ray actors, with a token signed for it)",
)
async def run_item(
    services: ServicesDep,
    token: Annotated[str, Depends(item_token)],
    request: Request,
    batch_id: str,
    item_id: int,
) -> dict[str, Any]:
    system = job_system(services)
    body = await request.body()
    key_id = system.signer.verify(token, batch_id, item_id, body) if system.signer else None
    if key_id is None:
        raise AuthenticationFailed(
            "the item token does not match this batch, item and line; only Keel's Ray "
            "executor calls this route, with the token it signed for the line"
        )
    try:
        line = orjson.loads(body)
        custom_id, payload = line["custom_id"], {"url": line["url"], "body": line["body"]}
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise InvalidRequest(
            "the body is not a batch line {custom_id, url, body}", param="body"
        ) from None
    try:
        result = await system.batch.run_line(batch_id, key_id, custom_id, payload)
    except ItemFailed as failure:
        return {"ok": False, **failure.as_dict()}
    return {"ok": True, "result": result}
