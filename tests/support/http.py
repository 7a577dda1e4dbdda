"""Run an ASGI app on a real uvicorn socket inside the test's event loop."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

import uvicorn
from starlette.types import ASGIApp

from keel.deploy.llamacpp import free_port


@asynccontextmanager
async def served(app: ASGIApp) -> AsyncIterator[str]:
    """Serve `app` on a free loopback port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@contextmanager
def served_in_thread(make_app: Callable[[], Awaitable[ASGIApp]]) -> Iterator[str]:
    """Serve an app built by `make_app` (inside the server's own loop) from a thread."""
    ready: queue.Queue[str | BaseException] = queue.Queue()
    stop = threading.Event()

    async def main() -> None:
        try:
            app = await make_app()
            async with served(app) as base:
                ready.put(base)
                while not stop.is_set():  # noqa: ASYNC110 - a threading.Event, set from outside
                    await asyncio.sleep(0.05)
        except BaseException as exc:
            ready.put(exc)
            raise

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    result = ready.get(timeout=60)
    if isinstance(result, BaseException):
        raise result
    try:
        yield result
    finally:
        stop.set()
        thread.join(timeout=10)
