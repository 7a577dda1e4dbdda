"""The one ASGI wrapper every request passes: ids on every response, the body limit and the
body-read deadline.

Kept as plain ASGI (not BaseHTTPMiddleware) so streaming stays cheap and unbuffered.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keel.errors import KeelError, PayloadTooLarge, RequestTimeout

_SAFE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
_WITH_BODY = ("POST", "PUT", "PATCH")


class RequestContext:
    def __init__(self, app: ASGIApp, max_body_bytes: int, body_timeout: float = 30.0):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self._reads = _BodyReads()

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
                # File uploads (/v1/files) are the one body that is not JSON.
                json_typed = value.startswith((b"application/json", b"multipart/form-data"))
        if not json_typed and scope["method"] in _WITH_BODY:
            # Every other body Keel takes is JSON; curl -d sends it as a form. Read it as JSON.
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
        response_started = False

        async def send_with_ids(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *ids]
                response_started = True
            await send(message)

        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await _error(send_with_ids, PayloadTooLarge(self.max_body_bytes))
            return
        chunked = length is None and scope["method"] in _WITH_BODY
        if not chunked and (length is None or length == b"0"):
            await self.app(scope, receive, send_with_ids)  # no body to wait for
            return
        expected = int(length) if length is not None else None
        body_receive = _BodyDeadline(receive, self._reads, self.body_timeout, expected)
        try:
            if chunked:
                await self._chunked(scope, body_receive, send_with_ids)
            else:
                await self.app(scope, body_receive, send_with_ids)
        except RequestTimeout as exc:
            # Raised by a body read whose caller let it through (FastAPI's own routes answer it
            # through errors.py): answer here, unless an answer is already under way.
            if response_started:
                raise
            await _error(send_with_ids, exc)

    async def _chunked(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read a chunked upload here, within the limit, and replay it to the app."""
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left mid-upload: there is no request to answer
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                await _error(send, PayloadTooLarge(self.max_body_bytes))
                return
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class _BodyReads:
    """Body reads under way and when each must end, timed by one timer for all of them.

    A timer per request (asyncio.timeout) cost 6 to 14 µs of CPU each on the development
    machine, about 2 % of a completion's; a dict entry costs next to nothing, and the one
    timer fires about once per deadline while requests come and go.
    """

    def __init__(self) -> None:
        self._due: dict[asyncio.Task[Any], float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.expired: set[asyncio.Task[Any]] = set()

    def add(self, task: asyncio.Task[Any], due: float) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # an app served by a new loop (tests): start afresh
            self._due.clear()
            self.expired.clear()
            self._loop, self._timer = loop, None
        self._due[task] = due
        if self._timer is None:
            self._timer = loop.call_at(due, self._sweep)

    def remove(self, task: asyncio.Task[Any]) -> None:
        self._due.pop(task, None)

    def _sweep(self) -> None:
        self._timer = None
        assert self._loop is not None
        now = self._loop.time()
        for task, due in list(self._due.items()):
            if due <= now:
                del self._due[task]
                self.expired.add(task)
                task.cancel()
        if self._due:
            self._timer = self._loop.call_at(min(self._due.values()), self._sweep)


class _BodyDeadline:
    """`receive` that raises RequestTimeout when the body is not whole `timeout` s after the
    headers, so a client that sends a few bytes and stops frees its connection.

    Once the body is in, later calls (disconnect watchers of streamed answers) wait as long
    as they like: the deadline is for the upload only.
    """

    __slots__ = ("_deadline", "_done", "_expected", "_reads", "_receive", "_received", "_timeout")

    def __init__(self, receive: Receive, reads: _BodyReads, timeout: float, expected: int | None):
        self._receive = receive
        self._reads = reads
        self._timeout = timeout
        self._deadline = asyncio.get_running_loop().time() + timeout
        self._expected = expected
        self._received = 0
        self._done = False

    async def __call__(self) -> Message:
        if self._done:
            return await self._receive()
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        self._reads.add(task, self._deadline)
        try:
            message = await self._receive()
        except asyncio.CancelledError:
            # Ours when the sweep cancelled this task, and no one else did too.
            if task in self._reads.expired:
                self._reads.expired.discard(task)
                if task.uncancel() <= cancelling:
                    raise RequestTimeout(self._timeout, self._received, self._expected) from None
            raise
        finally:
            self._reads.remove(task)
        if message["type"] != "http.request" or not message.get("more_body", False):
            self._done = True
        else:
            self._received += len(message.get("body", b""))
        return message


async def _error(send: Send, error: KeelError) -> None:
    """Answer `error` and close the connection: the rest of the upload is not wanted."""
    body = orjson.dumps(error.envelope())
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
