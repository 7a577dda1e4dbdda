"""POST /v1/batches/{batch_id}/items/{item_id}/run: one batch line run for Keel's Ray actors.

Its credential is an item token the Ray executor signed for the line (keel/jobs/tokens.py),
not an API key: the line runs through `Gateway.handle` as the batch's owner, and the
executor holding the job's lease records the outcome, so this route writes nothing itself.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request

from keel.errors import InvalidRequest
from keel.jobs.executor import ItemFailed
from keel.server.deps import ServicesDep
from keel.server.openai.files import job_system
from keel.server.openai.job_items import item_token, signed_key

router = APIRouter(tags=["jobs"])  # included by batches.py, under /v1


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
    key_id = signed_key(system, token, batch_id, item_id, body, signed_for="batch, item and line")
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
