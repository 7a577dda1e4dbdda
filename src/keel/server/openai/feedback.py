"""POST /v1/feedback: an app scores one of its own answers by the trace id it was given."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import Field

from keel.auth.keys import Principal
from keel.server.admin.traces import _ERRORS, TRACE_ID_PATTERN, NewScore, Score, add_score
from keel.server.deps import ServicesDep, require

router = APIRouter(prefix="/v1", tags=["openai"])


class Feedback(NewScore):
    trace_id: str = Field(
        pattern=TRACE_ID_PATTERN, description="The X-Keel-Trace-Id header of the response."
    )


@router.post(
    "/feedback",
    summary="Send feedback on a response (a score on its trace)",
    response_model=Score,
    status_code=201,
    responses=_ERRORS,
)
async def feedback(
    body: Feedback,
    services: ServicesDep,
    principal: Annotated[Principal, require("inference")],
) -> Response:
    return await add_score(services, principal, body.trace_id, body)
