"""Responses for the hot path: JSON through orjson, and server-sent events."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from fastapi.responses import Response
from starlette.types import Receive, Scope, Send

from keel.gateway.disconnect import ClientWatch
from keel.tracing.model import ClientDisconnected


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


class EventStream(Response):
    """Server-sent events from an async iterator of bytes, sent as they come.

    Starlette's StreamingResponse does the same, but watches for the client leaving with an
    anyio task group per response, which cost about 5 % of Keel's CPU per stream
    (docs/benchmarks.md). Here the events are sent from the request's own task, inside the
    request's ClientWatch: when the client leaves, the watch cancels that task wherever it
    waits, and closing the events closes the upstream, records the trace and settles.

    The sending and its cancellation happen in one task, so they cannot race: the events
    are either finished before the client is seen leaving, or they are cut short (and the
    relay records 499) wherever they were.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        events: AsyncIterator[bytes],
        client: ClientWatch | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        self.events = events
        self.client = client
        self.status_code = 200
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = self.client if self.client is not None else ClientWatch(receive)
        try:
            with client.cancelling():
                await send(
                    {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
                )
                async for chunk in self.events:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except ClientDisconnected:
            pass  # the relay records it (below, or on collection if it never started)
        finally:
            client.close()
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()  # a stream cut short finishes its trace and settles now
