"""Turn every failure into OpenAI's error envelope with the right status; never a bare 500."""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from keel.errors import InvalidRequest, KeelError
from keel.server.responses import json_response

log = logging.getLogger("keel.server")

_HTTP_TYPES = {
    401: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
}


_TYPE_TAGS = {"str", "int", "float", "bool", "none", "dict"}


def _is_field(part: object) -> bool:
    # Union members appear in pydantic's loc as type names ('str', 'list[str]'): not fields.
    text = str(part)
    return text not in _TYPE_TAGS and not any(c in text for c in "[]-(")


def _param(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header") and _is_field(p)]
    if not parts:
        return None
    text = parts[0]
    for part in parts[1:]:
        text += f"[{part}]" if part.isdigit() else f".{part}"
    return text


def validation_error(exc: RequestValidationError) -> KeelError:
    errors = exc.errors()
    first: dict[str, Any] = dict(errors[0]) if errors else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "")
        return InvalidRequest(
            f"request body is not valid JSON ({detail}); send a JSON object with "
            "'Content-Type: application/json'"
        )
    param = _param(tuple(first.get("loc", ())))
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if first.get("type") == "missing":
        message = (
            f"'{param}' is required; add it to the JSON body"
            if param
            else "a JSON object body is required"
        )
    elif param is None:
        message = f"request body must be a JSON object ({message})"
    else:
        message = f"invalid '{param}': {message}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return InvalidRequest(message, param=param)


async def _pydantic(_request: Request, exc: Exception) -> Response:
    # Specs validated inside handlers (e.g. a name taken from the path) fail the same way
    # as request bodies do.
    assert isinstance(exc, ValidationError)
    error = validation_error(RequestValidationError(exc.errors()))
    return json_response(error.envelope(), error.status)


async def _keel_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, KeelError)
    return json_response(exc.envelope(), exc.status, headers=exc.headers)


async def _validation(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    error = validation_error(exc)
    return json_response(error.envelope(), error.status)


def _unparsable_body(cause: BaseException | None) -> KeelError | None:
    """What FastAPI's bare "There was an error parsing the body" was about, said usefully.

    FastAPI raises that 400 from the exception its JSON decoding met: invalid UTF-8, JSON
    nested deeper than the decoder recurses, or a body read that ran out of time.
    """
    if isinstance(cause, KeelError):
        return cause
    if isinstance(cause, UnicodeDecodeError):
        return InvalidRequest(
            f"request body is not valid UTF-8 (byte {cause.start}: {cause.reason}); "
            "send UTF-8 encoded JSON"
        )
    if isinstance(cause, RecursionError):
        # The decoder recurses once per level, up to the interpreter's recursion limit (less
        # the frames already on the stack), so the depth it gave up at is approximate.
        return InvalidRequest(
            f"request body is JSON nested deeper than about {sys.getrecursionlimit()} levels "
            "of arrays and objects, too deep to read; send a flatter JSON object"
        )
    return None


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400 and (error := _unparsable_body(exc.__cause__)) is not None:
        return await _keel_error(request, error)
    message = str(exc.detail)
    if exc.status_code in (404, 405):
        message = (
            f"{message}: {request.method} {request.url.path}; "
            "the API is described at /docs and /openapi.json"
        )
    error = KeelError(message)
    error.status = exc.status_code
    error.type = "invalid_request_error"
    return json_response(error.envelope(), exc.status_code, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    trace_id = request.scope.get("state", {}).get("trace_id", "-")
    log.exception("unhandled error on %s %s (trace %s)", request.method, request.url.path, trace_id)
    error = KeelError(f"internal error; it was logged with trace id {trace_id}")
    return json_response(error.envelope(), 500)


Handler = Callable[[Request, Exception], Awaitable[Response]]

# Most specific first: RequestValidationError is not a ValidationError, but keep the order
# honest anyway for the lookup in `respond`.
_HANDLERS: tuple[tuple[type[Exception], Handler], ...] = (
    (KeelError, _keel_error),
    (RequestValidationError, _validation),
    (ValidationError, _pydantic),
    (HTTPException, _http),
)


async def respond(request: Request, exc: Exception) -> Response:
    """The error response FastAPI's handlers would give; re-raises what has none (a 500).

    For endpoints served outside FastAPI's routing (server/hot.py), so they fail alike.
    """
    for kind, handler in _HANDLERS:
        if isinstance(exc, kind):
            return await handler(request, exc)
    raise exc


def install(app: FastAPI) -> None:
    for kind, handler in _HANDLERS:
        app.add_exception_handler(kind, handler)
    app.add_exception_handler(Exception, _unexpected)
