"""A minimal OpenAI-compatible upstream for benchmarks: fixed answers, no model behind them.

Run as its own process (`python bench/stub.py --port P [--delay-ms D]`); it listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

import orjson
import uvloop
from aiohttp import web

MODEL = "stub"
_PROMPT_TOKENS = 9
_PIECES = ("Hi", " there", "!")
_CREATED = int(time.time())
_DONE = b"data: [DONE]\n\n"


def _completion() -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-stub",
            "object": "chat.completion",
            "created": _CREATED,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(_PIECES)},
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(),
        }
    )


def _usage() -> dict[str, int]:
    completion = len(_PIECES)
    return {
        "prompt_tokens": _PROMPT_TOKENS,
        "completion_tokens": completion,
        "total_tokens": _PROMPT_TOKENS + completion,
    }


def _chunk(delta: dict[str, str], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def _stream_events(include_usage: bool) -> list[bytes]:
    chunks = [_chunk({"role": "assistant", "content": ""})]
    chunks += [_chunk({"content": piece}) for piece in _PIECES]
    chunks.append(_chunk({}, finish_reason="stop"))
    if include_usage:
        chunks.append({**_chunk({}), "choices": [], "usage": _usage()})
    return [_event(chunk) for chunk in chunks] + [_DONE]


class Stub:
    """The stub's handlers, with every answer serialised once at start-up."""

    def __init__(self, delay_ms: float):
        self._delay = delay_ms / 1000
        self._completion = _completion()
        self._events = {flag: _stream_events(flag) for flag in (False, True)}
        self._models = orjson.dumps(
            {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "bench"}]}
        )

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        if self._delay:
            await asyncio.sleep(self._delay)
        if not body.get("stream"):
            return web.Response(body=self._completion, content_type="application/json")
        options = body.get("stream_options") or {}
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in self._events[bool(options.get("include_usage"))]:
            await response.write(event)
        await response.write_eof()
        return response

    async def models(self, _request: web.Request) -> web.Response:
        return web.Response(body=self._models, content_type="application/json")


def build_app(delay_ms: float = 0.0) -> web.Application:
    stub = Stub(delay_ms)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", stub.chat)
    app.router.add_get("/v1/models", stub.models)
    return app


async def serve(port: int, delay_ms: float) -> None:
    runner = web.AppRunner(build_app(delay_ms), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1.")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="Wait before each answer.")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args.port, args.delay_ms))


if __name__ == "__main__":
    main()
