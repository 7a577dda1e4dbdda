"""Local HTTP tools for workflow and agent tests: JSON endpoints that count every request
by its idempotency key, and one that answers HTML. Run in-process (`ToolServer`) or as its
own process (`python -m tests.support.tools --port N --counts FILE`), so a test can kill
Keel and still read what the tool saw."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from keel.deploy.llamacpp import free_port


@dataclass
class ToolServer:
    counts: Counter[str] = field(default_factory=Counter)  # idempotency key → requests
    model_counts: Counter[str] = field(default_factory=Counter)  # last message → requests
    delay: float = 0.0  # seconds each answer waits (so a test can stop Keel mid-run)
    bodies: list[Any] = field(default_factory=list)
    fail_next: int = 0  # answer 503 to this many requests first
    counts_file: Path | None = None
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> ToolServer:
        app = web.Application()
        app.router.add_post("/echo", self._echo)
        app.router.add_post("/weather", self._weather)
        app.router.add_post("/convert", self._convert)
        app.router.add_post("/html", self._html)
        app.router.add_post("/same", self._same)
        app.router.add_post("/v1/chat/completions", self._model)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        self.port = port or free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _seen(self, request: web.Request) -> Any:
        body = await request.json() if request.can_read_body else None
        self.counts[request.headers.get("Idempotency-Key", "")] += 1
        self.bodies.append(body)
        self._save()
        await asyncio.sleep(self.delay)
        return body

    def _save(self) -> None:
        if self.counts_file is not None:
            data = {"http": self.counts, "model": self.model_counts}
            partial = self.counts_file.with_suffix(".tmp")
            partial.write_text(json.dumps(data))
            os.replace(partial, self.counts_file)  # a reader never sees half a file

    async def _model(self, request: web.Request) -> web.Response:
        """A stub upstream: answers the last message back, counting each one it saw."""
        body = await request.json()
        text = str(body["messages"][-1]["content"])
        self.model_counts[text] += 1
        self._save()
        await asyncio.sleep(self.delay)
        return web.json_response(
            {
                "id": "stub",
                "object": "chat.completion",
                "created": 1,
                "model": "stub",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": f"seen {text}"},
                    }
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            }
        )

    async def _echo(self, request: web.Request) -> web.Response:
        body = await self._seen(request)
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.json_response({"error": "try later"}, status=503)
        return web.json_response({"echo": body, "auth": request.headers.get("Authorization")})

    async def _weather(self, request: web.Request) -> web.Response:
        body = await self._seen(request)
        city = str((body or {}).get("city", ""))
        return web.json_response({"city": city, "temperature_c": 10 + len(city) % 15})

    async def _convert(self, request: web.Request) -> web.Response:
        body = await self._seen(request) or {}
        celsius = body.get("celsius", 0)
        value = celsius * 9 / 5 + 32 if isinstance(celsius, int | float) else None
        return web.json_response({"fahrenheit": value})

    async def _same(self, request: web.Request) -> web.Response:
        await self._seen(request)
        return web.json_response({"status": "pending", "hint": "not ready; ask again"})

    async def _html(self, request: web.Request) -> web.Response:
        await self._seen(request)
        return web.Response(text="<html>maintenance</html>", content_type="text/html")


async def _serve(port: int, counts: Path, delay: float) -> None:
    server = ToolServer(counts_file=counts, delay=delay)
    await server.start(port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--counts", type=Path, required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    arguments = parser.parse_args()
    asyncio.run(_serve(arguments.port, arguments.counts, arguments.delay))


class ToolProcess:
    """The tools (and stub upstream) as their own process, which outlives a killed Keel."""

    def __init__(self, counts: Path, delay: float = 0.0):
        self.counts_path, self.delay = counts, delay
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ToolProcess:
        root = Path(__file__).resolve().parents[2]
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.tools",
                "--port",
                str(self.port),
                "--counts",
                str(self.counts_path),
                "--delay",
                str(self.delay),
            ],
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            time.sleep(0.05)
        raise RuntimeError(f"the tool server did not start on port {self.port}")

    def counts(self) -> dict[str, dict[str, int]]:
        if not self.counts_path.exists():
            return {"http": {}, "model": {}}
        data: dict[str, dict[str, int]] = json.loads(self.counts_path.read_text())
        return data

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
