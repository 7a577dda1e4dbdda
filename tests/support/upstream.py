"""A scriptable OpenAI-compatible upstream for routing and fault tests (not for e2e proof)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from keel.deploy.llamacpp import free_port

Behaviour = str  # "ok", "status:<code>", "invalid_json", "no_choices", "slow", "stream_break"


@dataclass
class FakeUpstream:
    """Answers like an OpenAI server; `behaviour` picks a fault to inject."""

    behaviour: Behaviour = "ok"
    reply: str = "Hello from the fake upstream."
    chunk_delay: float = 0.0
    report_usage: bool = True
    retry_after: str | None = None  # Retry-After header sent with injected status errors
    echo: bool = False  # answer with the last message's text instead of `reply`
    requests: list[dict[str, Any]] = field(default_factory=list)
    disconnects: int = 0
    port: int = 0
    fixed_port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._chat)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        self.port = self.fixed_port or free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        chat = request.path.endswith("chat/completions")
        if self.behaviour.startswith("status:"):
            code = int(self.behaviour.split(":")[1])
            headers = {"Retry-After": self.retry_after} if self.retry_after else None
            return web.json_response(
                {"error": {"message": f"injected {code}"}}, status=code, headers=headers
            )
        if self.behaviour == "invalid_json":
            return web.Response(text="<html>oops</html>", content_type="text/html")
        if self.behaviour == "no_choices":
            return web.json_response({"id": "x"})
        if self.behaviour == "slow":
            await asyncio.sleep(5)
        reply = self._reply(body)
        if body.get("stream"):
            return await self._stream(request, body, chat, reply)
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
        if chat:
            choice["message"] = {"role": "assistant", "content": reply}
        else:
            choice["text"] = reply
        answer: dict[str, Any] = {
            "id": "cmpl-fake",
            "object": "chat.completion" if chat else "text_completion",
            "created": 1,
            "model": body.get("model"),
            "choices": [choice],
        }
        if self.report_usage:
            answer["usage"] = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
        return web.json_response(answer)

    def _reply(self, body: dict[str, Any]) -> str:
        if not self.echo:
            return self.reply
        if "messages" in body:
            content = body["messages"][-1].get("content")
            return content if isinstance(content, str) else self.reply
        return str(body.get("prompt", self.reply))

    async def _stream(
        self, request: web.Request, body: dict[str, Any], chat: bool, reply: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        words = reply.split(" ")
        try:
            for index, word in enumerate(words):
                if self.behaviour == "stream_break" and index == 2:
                    request.transport.close()  # type: ignore[union-attr]
                    return response
                piece = word if index == 0 else " " + word
                delta = {"delta": {"content": piece}} if chat else {"text": piece}
                chunk = {"id": "c1", "created": 1, "model": body.get("model"),
                         "choices": [{"index": 0, **delta, "finish_reason": None}]}  # fmt: skip
                await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                await asyncio.sleep(self.chunk_delay)
            delta = {"delta": {}} if chat else {"text": ""}
            chunk = {"id": "c1", "created": 1, "model": body.get("model"),
                     "choices": [{"index": 0, **delta, "finish_reason": "stop"}]}  # fmt: skip
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            if self.report_usage and (body.get("stream_options") or {}).get("include_usage"):
                usage = {"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 0}
                chunk = {"id": "c1", "created": 1, "choices": [], "usage": usage}
                await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            await response.write(b"data: [DONE]\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise
        return response
