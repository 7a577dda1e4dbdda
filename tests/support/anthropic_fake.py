"""A local stand-in for Anthropic's Messages API, streaming included, with injectable faults.

It records each request's headers and body, so tests can check what the adapter sent.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from keel.deploy.llamacpp import free_port

# "ok", "tool_use", "status:<code>", "invalid_json", "slow", "stream_error", "stream_truncated"
Behaviour = str

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
TOOL_INPUT_PIECES = ('{"city": ', '"Paris", "unit": "C"}')


@dataclass
class RecordedRequest:
    headers: CIMultiDict[str]
    body: dict[str, Any]


@dataclass
class FakeAnthropic:
    """Answers POST /v1/messages like Anthropic does; `behaviour` picks a fault to inject."""

    behaviour: Behaviour = "ok"
    reply: str = "Hello from the fake Claude."
    stop_reason: str = "end_turn"
    input_tokens: int = 11
    retry_after: str | None = None  # Retry-After header sent with injected status errors
    requests: list[RecordedRequest] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _content(self) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = [{"type": "text", "text": self.reply}]
        if self.behaviour == "tool_use":
            tool_input = json.loads("".join(TOOL_INPUT_PIECES))
            content.append(
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": tool_input}
            )
        return content

    @property
    def _stop(self) -> str:
        return "tool_use" if self.behaviour == "tool_use" else self.stop_reason

    @property
    def output_tokens(self) -> int:
        return len(self.reply.split(" "))

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(RecordedRequest(CIMultiDict(request.headers), body))
        if self.behaviour.startswith("status:"):
            code = int(self.behaviour.split(":")[1])
            error = {"type": _ERROR_TYPES.get(code, "api_error"), "message": f"injected {code}"}
            headers = {"Retry-After": self.retry_after} if self.retry_after else None
            return web.json_response(
                {"type": "error", "error": error}, status=code, headers=headers
            )
        if self.behaviour == "invalid_json":
            return web.Response(text="<html>oops</html>", content_type="text/html")
        if self.behaviour == "slow":
            await asyncio.sleep(5)
        if body.get("stream"):
            return await self._stream(request, body)
        return web.json_response(
            {
                "id": "msg_fake01",
                "type": "message",
                "role": "assistant",
                "model": body.get("model"),
                "content": self._content(),
                "stop_reason": self._stop,
                "stop_sequence": None,
                "usage": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens},
            }
        )

    async def _stream(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(event: dict[str, Any]) -> None:
            line = f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
            await response.write(line.encode())

        message = {
            "id": "msg_fake02",
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 1},
        }
        await send({"type": "message_start", "message": message})
        await send({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}})  # fmt: skip
        await send({"type": "ping"})
        for index, word in enumerate(self.reply.split(" ")):
            if index == 2 and self.behaviour == "stream_error":
                error = {"type": "overloaded_error", "message": "Overloaded"}
                await send({"type": "error", "error": error})
                return response
            if index == 2 and self.behaviour == "stream_truncated":
                return response
            delta = {"type": "text_delta", "text": word if index == 0 else " " + word}
            await send({"type": "content_block_delta", "index": 0, "delta": delta})
        await send({"type": "content_block_stop", "index": 0})
        if self.behaviour == "tool_use":
            block = {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}
            await send({"type": "content_block_start", "index": 1, "content_block": block})
            for piece in TOOL_INPUT_PIECES:
                delta = {"type": "input_json_delta", "partial_json": piece}
                await send({"type": "content_block_delta", "index": 1, "delta": delta})
            await send({"type": "content_block_stop", "index": 1})
        await send({"type": "message_delta",
                    "delta": {"stop_reason": self._stop, "stop_sequence": None},
                    "usage": {"output_tokens": self.output_tokens}})  # fmt: skip
        await send({"type": "message_stop"})
        return response
