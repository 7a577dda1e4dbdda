"""The gateway's hot routes, served straight from ASGI instead of through FastAPI's routing.

FastAPI's per-request machinery (route matching over every admin route, the exception and
exit-stack middlewares, dependency solving, body validation into a model and back) cost
about a third of Keel's CPU per completion (docs/benchmarks.md, "Profile of Keel's hot
path"). The endpoints listed here take a Starlette `Request` and do the little of that they
need themselves. They stay registered on their FastAPI routers too, which document them in
OpenAPI and serve them where this table does not match (e.g. under a root path).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from fastapi import FastAPI
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from keel.errors import InvalidRequest
from keel.server import errors

Endpoint = Callable[[Request], Awaitable[Response]]


class HotRoutes:
    """ASGI middleware: (method, path) in `routes` goes to its endpoint, the rest to `app`."""

    def __init__(self, app: ASGIApp, routes: Mapping[tuple[str, str], Endpoint]):
        self.app = app
        self.routes = dict(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = (
            self.routes.get((scope["method"], scope["path"])) if scope["type"] == "http" else None
        )
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except Exception as exc:  # errors.respond re-raises what is not a 4xx
            response = await errors.respond(request, exc)
        await response(scope, receive, send)


async def json_body(request: Request, model: type[BaseModel]) -> dict[str, Any]:
    """The request's JSON object, checked against `model`, as the client sent it.

    The wire contract is the model, but what goes on is the parsed JSON itself: the models
    are strict and change no value, so dumping the model again would only copy the dict.
    """
    raw = await request.body()
    if not raw.strip():
        raise InvalidRequest("a JSON object body is required")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"request body is not valid JSON ({exc}); send a JSON object with "
            "'Content-Type: application/json'"
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequest(
            f'request body must be a JSON object, not {type(data).__name__}; send {{"model": …, …}}'
        )
    model.model_validate(data)  # a ValidationError becomes a 400 naming the param
    return data


def body_docs(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` that documents `model` as the JSON body of a route that reads its own."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": _ref(model.__name__)}}},
        }
    }


def _ref(name: str) -> str:
    return f"#/components/schemas/{name}"


def document_bodies(app: FastAPI, models: list[type[BaseModel]]) -> None:
    """Add `models` (named by `body_docs`) to the app's OpenAPI components."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                body = model.model_json_schema(ref_template=_ref("{model}"))
                components.update(body.pop("$defs", {}))
                components[model.__name__] = body
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
