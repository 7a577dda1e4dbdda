"""The one ASGI wrapper every request passes: ids on every response, and the body limit.

Kept as plain ASGI (not BaseHTTPMiddleware) so streaming stays cheap and unbuffered.
"""

from __future__ import annotations

import os
import re
import time

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keel.errors import PayloadTooLarge

_SAFE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")


class RequestContext:
    def __init__(self, app: ASGIApp, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_ns = time.time_ns()  # the trace of the request starts here
        # 48 bits of milliseconds, then 80 random bits (as UUIDv7 does): ids sort by time,
        # so the trace store's indexes grow at one end instead of everywhere.
        trace_id = f"{started_ns // 1_000_000:012x}{os.urandom(10).hex()}"
        request_id = b""
        length = None
        json_typed = False
        for name, value in scope["headers"]:
            if name == b"x-request-id" and _SAFE_ID.match(value):
                request_id = value
            elif name == b"content-length":
                length = value
            elif name == b"content-type":
                json_typed = value.startswith(b"application/json")
        if not json_typed and scope["method"] in ("POST", "PUT", "PATCH"):
            # Every body Keel takes is JSON; curl -d sends it as a form. Read it as JSON anyway.
            scope["headers"] = [
                *((n, v) for n, v in scope["headers"] if n != b"content-type"),
                (b"content-type", b"application/json"),
            ]
        ids = [
            (b"x-keel-trace-id", trace_id.encode()),
            (b"x-request-id", request_id or trace_id.encode()),
        ]
        state = scope.setdefault("state", {})
        state["trace_id"], state["started_ns"] = trace_id, started_ns

        async def send_with_ids(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *ids]
            await send(message)

        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await self._too_large(send_with_ids)
            return
        if length is None and scope["method"] in ("POST", "PUT", "PATCH"):
            # Chunked upload: read it here, within the limit, and replay it to the app.
            body = bytearray()
            more = True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    break
                body += message.get("body", b"")
                if len(body) > self.max_body_bytes:
                    await self._too_large(send_with_ids)
                    return
                more = message.get("more_body", False)
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": bytes(body), "more_body": False}
                return await receive()

            await self.app(scope, replay, send_with_ids)
            return
        await self.app(scope, receive, send_with_ids)

    async def _too_large(self, send: Send) -> None:
        body = orjson.dumps(PayloadTooLarge(self.max_body_bytes).envelope())
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
