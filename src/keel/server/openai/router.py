"""/v1 routes: chat and text completions, embeddings, models."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel

from keel.auth.keys import Principal
from keel.errors import InvalidRequest
from keel.gateway.choices import choice_count
from keel.gateway.disconnect import ClientWatch
from keel.gateway.pipeline import GatewayRequest
from keel.providers.base import Operation, Usage
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
from keel.server.responses import EventStream, json_response
from keel.server.services import Services
from keel.tracing.model import ClientDisconnected, RequestTrace

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


async def _answer(services: Services, request: GatewayRequest) -> Response:
    trace, stream, client = request.trace, bool(request.body.get("stream")), request.client
    try:
        if stream and choice_count(request.body) > 1:
            raise InvalidRequest(
                "n above 1 is answered whole only; send stream: false with n, or one "
                "streamed request per choice",
                param="n",
            )
        request = await services.gateway.prepare(request)
        if trace is not None:
            trace.prepared(request.body, request.headers)
        if stream:
            events = await services.gateway.open_stream(request)  # the relay finishes the trace
            client = None  # watched on by the stream, which closes it
            return EventStream(events, request.client, {**_SSE_HEADERS, **request.headers})
        body = await services.gateway.complete(request)
    except ClientDisconnected as exc:
        if trace is not None:
            trace.finish(exc)
        return Response(status_code=499)  # nobody is there to read it
    except BaseException as exc:
        if trace is not None:
            trace.finish(exc)
        raise
    finally:
        if client is not None:
            client.close()
    if trace is not None:
        # The client may have left after the upstream answered: the answer reached nobody.
        trace.finish(ClientDisconnected() if client is not None and client.gone else None)
    return json_response(body, headers=request.headers)


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
    return await _answer(services, _request(http, services, "chat/completions", principal, wire))


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
    return await _answer(services, _request(http, services, "completions", principal, wire))


def _request(
    http: Request, services: Services, op: Operation, principal: Principal, wire: dict[str, Any]
) -> GatewayRequest:
    trace = services.tracing.start(http.scope, op, principal, wire)
    trace_id: str = http.scope.get("state", {}).get("trace_id", "")
    return GatewayRequest(
        op, wire, principal, trace_id, trace=trace, client_headers=http.headers,
        client=ClientWatch(http.receive),
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
    wire = {"model": body.model, "input": body.input}
    trace = services.tracing.start(http.scope, "embeddings", principal, wire)
    try:
        response = await _embeddings(body, services, principal, trace)
    except BaseException as exc:
        if trace is not None:
            trace.finish(exc)
        raise
    if trace is not None:
        trace.finish()
    return response


async def _embeddings(
    body: EmbeddingRequest, services: Services, principal: Principal, trace: RequestTrace | None
) -> Response:
    await services.access.admission.admit_embeddings(principal, body.model)
    chat_models = services.router.table.names(principal.project_id)
    embedder = services.catalog.resolve_embedder(body.model, chat_models)
    texts = [body.input] if isinstance(body.input, str) else body.input
    limit = services.settings.embedding_max_inputs
    if len(texts) > limit:
        raise InvalidRequest(
            f"{len(texts)} inputs in one request; at most {limit} are accepted "
            "(split the batch, or raise embedding_max_inputs)",
            param="input",
        )
    if body.dimensions is not None and body.dimensions != embedder.dimension:
        raise InvalidRequest(
            f"model {embedder.name!r} returns {embedder.dimension} dimensions; "
            f"omit 'dimensions' or set it to {embedder.dimension}",
            param="dimensions",
        )
    step = trace.begin("embed") if trace is not None else None
    result = await embedder.embed(texts)
    if trace is not None and step is not None:
        trace.end(step)
        trace.route, trace.attempts, trace.embedding_model = body.model, 1, embedder.name
        trace.usage = Usage(result.prompt_tokens, 0)
    data: list[dict[str, Any]] = []
    for index, vector in enumerate(result.vectors):
        encoded: Any = (
            base64.b64encode(vector.astype("<f4").tobytes()).decode()
            if body.encoding_format == "base64"
            else vector.tolist()
        )
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    return json_response(
        {
            "object": "list",
            "data": data,
            "model": embedder.name,
            "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
        }
    )


@router.get("/models", summary="List the models clients may use", response_model=ModelList)
async def list_models(services: ServicesDep, principal: PrincipalDep) -> Response:
    cards = services.chat_model_cards(principal.project_id) + services.catalog.embedding_cards()
    allowed = principal.scopes.routes
    if allowed is not None:  # a scoped key sees only what it may call
        cards = [card for card in cards if card["id"] in allowed]
    return json_response({"object": "list", "data": sorted(cards, key=lambda c: c["id"])})
