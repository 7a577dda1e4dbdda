"""The thinnest useful reverse proxy, as a floor for what any gateway adds: no parsing, no auth.

`python bench/floor.py --port P --upstream http://127.0.0.1:S` forwards every POST body to
the same path upstream and streams the answer back as it arrives.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import uvloop
from aiohttp import web


async def _forward(request: web.Request) -> web.StreamResponse:
    session: aiohttp.ClientSession = request.app["session"]
    body = await request.read()
    async with session.post(
        request.app["upstream"] + request.path,
        data=body,
        headers={"Content-Type": "application/json"},
    ) as upstream:
        response = web.StreamResponse(status=upstream.status)
        response.content_type = upstream.content_type
        await response.prepare(request)
        async for data in upstream.content.iter_any():
            await response.write(data)
        await response.write_eof()
        return response


async def _healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _session(app: web.Application) -> AsyncIterator[None]:
    # One pooled session for the process, as any real proxy keeps its upstream connections.
    app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    yield
    await app["session"].close()


def build_app(upstream: str) -> web.Application:
    app = web.Application()
    app["upstream"] = upstream.rstrip("/")
    app.cleanup_ctx.append(_session)
    app.router.add_get("/healthz", _healthz)
    app.router.add_post("/{path:.*}", _forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1.")
    parser.add_argument(
        "--upstream", required=True, help="Upstream origin, e.g. http://127.0.0.1:9000"
    )
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        web.run_app(
            build_app(args.upstream),
            host="127.0.0.1",
            port=args.port,
            access_log=None,
            print=None,
            loop=uvloop.new_event_loop(),
        )


if __name__ == "__main__":
    main()
