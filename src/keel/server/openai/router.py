"""/v1 routes: chat and text completions, embeddings, models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel

from keel.auth.keys import Principal
from keel.calls import Call, CallOp
from keel.gateway.answer import Answer
from keel.server.deps import PrincipalDep, ServicesDep, authenticate_request, bearer_token
from keel.server.hot import Endpoint, body_docs, json_body
from keel.server.openai.protocol import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    EmbeddingList,
    EmbeddingRequest,
    ErrorResponse,
    ModelList,
)
from keel.server.openai.workflows import is_workflow_model, workflow_chat
from keel.server.responses import EventStream as SSEResponse
from keel.server.responses import json_response
from keel.server.services import Services
from keel.tracing.model import ClientDisconnected, header_context

router = APIRouter(prefix="/v1", tags=["openai"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        400: "Invalid request (the message names the param)",
        401: "Missing or invalid API key",
        403: "The key's role or scopes do not allow this",
        404: "Unknown model",
        413: "Body over max_body_bytes",
        429: "A rate limit or budget is used up (see retry-after)",
        502: "Upstream failed (upstream_error) or refused Keel's key (upstream_auth_error)",
        503: "Upstream or model server unavailable",
        504: "Upstream timed out",
    }.items()
}
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def _answer(services: Services, call: Call) -> Response:
    """The gateway's answer as an HTTP response (a client that left gets none: 499)."""
    try:
        answer = await services.gateway.handle(call)
    except ClientDisconnected:
        return Response(status_code=499)  # nobody is there to read it
    if isinstance(answer, Answer):
        return json_response(answer.body, headers=answer.headers)
    return SSEResponse(answer.events, answer.client, {**_SSE_HEADERS, **answer.headers})


# The completion routes are served by server/hot.py, outside FastAPI's dependency and
# body machinery: they take the request, authenticate it and read the body themselves.
# Registered on the router too, which documents them (and serves them under a root path).
HOT_ROUTES: dict[tuple[str, str], Endpoint] = {}
HOT_BODIES: list[type[BaseModel]] = []


def _hot_post(path: str, body: type[BaseModel], **docs: Any) -> Callable[[Endpoint], Endpoint]:
    def register(endpoint: Endpoint) -> Endpoint:
        extra = {"security": [{"HTTPBearer": []}], **body_docs(body)}
        router.post(path, responses=_ERRORS, openapi_extra=extra, **docs)(endpoint)
        HOT_ROUTES[("POST", router.prefix + path)] = endpoint
        HOT_BODIES.append(body)
        return endpoint

    return register


async def _caller(http: Request, services: Services) -> Principal:
    return await authenticate_request(http, services, bearer_token(http))


@_hot_post(
    "/chat/completions",
    ChatCompletionRequest,
    summary="Create a chat completion (streaming with stream: true)",
    response_model=ChatCompletion,
)
async def chat_completions(http: Request) -> Response:
    services: Services = http.app.state.services
    principal = await _caller(http, services)
    wire = await json_body(http, ChatCompletionRequest)
    if is_workflow_model(wire.get("model")):  # workflow:NAME, agent:NAME: a run, not a call
        return await workflow_chat(
            services, principal, wire, _call(http, "chat/completions", principal, wire).trace_id
        )
    return await _answer(services, _call(http, "chat/completions", principal, wire))


@_hot_post(
    "/completions",
    CompletionRequest,
    summary="Create a text completion (legacy API)",
    response_model=Completion,
)
async def completions(http: Request) -> Response:
    services: Services = http.app.state.services
    principal = await _caller(http, services)
    wire = await json_body(http, CompletionRequest)
    if isinstance(wire["prompt"], list):
        wire["prompt"] = wire["prompt"][0]
    return await _answer(services, _call(http, "completions", principal, wire))


def _call(http: Request, op: CallOp, principal: Principal, wire: dict[str, Any]) -> Call:
    """The gateway call for an HTTP request: the server's ids and timings, the client's
    X-Keel-* context, and the channel on which a client that leaves is noticed."""
    scope = http.scope
    state = scope.get("state") or {}
    session_id, metadata = header_context(scope)
    return Call(
        op, wire, principal, state.get("trace_id", ""), http.headers, http.receive,
        state.get("started_ns", 0), state.get("auth_ns"), session_id, metadata,
    )  # fmt: skip


@router.post(
    "/embeddings",
    summary="Embed texts",
    response_model=EmbeddingList,
    responses=_ERRORS,
)
async def embeddings(
    body: EmbeddingRequest, services: ServicesDep, principal: PrincipalDep, http: Request
) -> Response:
    wire = body.model_dump(exclude_unset=True)
    return await _answer(services, _call(http, "embeddings", principal, wire))


@router.get("/models", summary="List the models clients may use", response_model=ModelList)
async def list_models(services: ServicesDep, principal: PrincipalDep) -> Response:
    cards = services.chat_model_cards(principal.project_id) + services.catalog.embedding_cards()
    allowed = principal.scopes.routes
    if allowed is not None:  # a scoped key sees only what it may call
        cards = [card for card in cards if card["id"] in allowed]
    return json_response({"object": "list", "data": sorted(cards, key=lambda c: c["id"])})
