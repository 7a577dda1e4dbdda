"""The stream relay: what arrived together leaves together, nothing waits for what has not."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from starlette.types import Message

from keel.server.app import create_app
from keel.server.services import stop_services
from tests.support.app import build_services
from tests.support.scripted import event, scripted_upstream

DONE = b"data: [DONE]\n\n"


async def test_events_that_arrive_together_leave_in_one_write_and_none_is_held_back(
    tmp_path: Path,
) -> None:
    later = asyncio.Event()
    body = json.dumps(
        {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    ).encode()
    async with scripted_upstream() as upstream:
        upstream.writes = [event("a") + event("b"), later, event("c") + DONE]
        services, key = build_services(tmp_path, upstream.base_url)
        app = create_app(services.settings, services=services)
        writes: list[bytes] = []
        received = False

        async def receive() -> Message:
            nonlocal received
            if not received:
                received = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client stays until the answer ends
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                writes.append(message["body"])
                if b'"b"' in message["body"]:
                    later.set()  # the upstream goes on only once "b" reached the client

        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions",
            "root_path": "",
            "query_string": b"",
            "headers": [
                (b"authorization", f"Bearer {key}".encode()),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("keel", 80),
        }
        try:
            await asyncio.wait_for(app(scope, receive, send), 10)
        finally:
            await stop_services(services)
    texts = [
        [json.loads(part)["choices"][0]["delta"]["content"] for part in _events(w)] for w in writes
    ]
    assert texts == [["a", "b"], ["c"]]
    assert writes[-1].endswith(DONE)


def _events(write: bytes) -> list[bytes]:
    lines = [line.removeprefix(b"data: ") for line in write.split(b"\n\n") if line]
    return [line for line in lines if line != b"[DONE]"]
