"""CPU per request of Keel's app, in-process, against an upstream that answers at once.

`python bench/handle_cpu.py` drives the ASGI app (create_app) with raw ASGI calls, one at a
time, with tracing on and an in-process provider: no sockets, no load generator, so the
figure is Keel's own CPU time per request (process time over a few thousand requests),
whole and streamed. `--src DIR` runs the app from another source tree (a revision
unpacked with `git archive REV src | tar -x -C DIR`), for before/after in one command:
`--compare DIR` runs this tree and DIR alternately and prints both. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import orjson

BODY = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
ANSWER = {
    "id": "x", "object": "chat.completion", "created": 0, "model": "upstream-model",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "Hello there."}}],
}  # fmt: skip
CHUNKS = [
    {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "upstream-model",
     "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
    for word in ("Hello", " there", ".")
] + [{"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "upstream-model",
      "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 3}}]  # fmt: skip


class _Stream:
    def __init__(self) -> None:
        self._left = [dict(chunk) for chunk in CHUNKS]

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        while self._left:
            yield self._left.pop(0)

    def buffered(self) -> bool:
        return bool(self._left)

    async def aclose(self) -> None:
        self._left = []


class InstantProvider:
    """Answers every call at once, from memory."""

    name = "instant"

    def __init__(self) -> None:
        # Imported once here: an import statement per call costs more than the answer.
        from keel.providers.base import ProviderResponse, Usage

        self._response, self._usage = ProviderResponse, Usage(3, 3)

    async def send(self, op: str, payload: dict[str, Any]) -> Any:
        return self._response(orjson.loads(orjson.dumps(ANSWER)), self._usage)

    async def open_stream(self, op: str, payload: dict[str, Any]) -> Any:
        return _Stream()

    async def count_usage(self, op: str, payload: dict[str, Any], text: str) -> Any:
        return self._usage

    async def close(self) -> None:
        pass


async def _measure(requests: int, stream: bool) -> float:
    from keel.routing.table import Target
    from keel.server.app import create_app
    from keel.server.services import build_services, stop_services
    from keel.settings import Settings
    from keel.store import migrate
    from keel.store.db import Database

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        settings = Settings.model_validate(
            {
                "data_dir": data,
                "local_model": False,
                "embeddings": False,
                "tracing": os.environ.get("HANDLE_CPU_TRACING", "1") == "1",
            }
        )
        database = Database(settings.effective_database_url)
        migrate.upgrade(database)
        services = build_services(settings, database)
        key = services.keys.bootstrap_admin(data)
        assert key is not None
        services.keys.load_cache()
        services.catalog.add_chat(Target("fake-model", InstantProvider(), "upstream-model"))
        app = create_app(settings, services=services)
        body = orjson.dumps({**BODY, "stream": stream})
        headers = [(b"authorization", f"Bearer {key}".encode()),
                   (b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]  # fmt: skip
        scope: dict[str, Any] = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
            "root_path": "", "query_string": b"", "headers": headers,
            "client": ("127.0.0.1", 50000), "server": ("keel", 80),
        }  # fmt: skip
        statuses: list[int] = []

        async def one() -> None:
            sent = False

            async def receive() -> dict[str, Any]:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                await asyncio.Event().wait()
                raise AssertionError("unreachable")

            async def send(message: MutableMapping[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    statuses.append(message["status"])

            await app(dict(scope), receive, send)

        try:
            services.tracing.start_writer()
            for _ in range(200):  # warm-up: caches, plans, first imports
                await one()
            started = time.process_time()
            for _ in range(requests):
                await one()
            spent = time.process_time() - started
        finally:
            await stop_services(services)
        if set(statuses) != {200}:
            raise SystemExit(f"unexpected statuses: {sorted(set(statuses))}")
        return spent / requests * 1e6


def _run_tree(src: Path | None, requests: int) -> dict[str, float]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = f"{src}{os.pathsep}{env.get('PYTHONPATH', '')}"
    argv = [sys.executable, __file__, "--requests", str(requests), "--child"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--compare", type=Path, default=None, help="Another tree's src dir.")
    parser.add_argument("--rounds", type=int, default=5, help="Alternations with --compare.")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        whole = asyncio.run(_measure(args.requests, stream=False))
        streamed = asyncio.run(_measure(args.requests, stream=True))
        print(json.dumps({"whole_us": round(whole, 1), "streamed_us": round(streamed, 1)}))
        return
    if args.compare is None:
        print(json.dumps(_run_tree(None, args.requests)))
        return
    rounds: dict[str, list[dict[str, float]]] = {"this": [], "other": []}
    for _ in range(args.rounds):  # alternated: drift on a shared machine hits both
        rounds["this"].append(_run_tree(None, args.requests))
        rounds["other"].append(_run_tree(args.compare, args.requests))
    best = {name: {k: min(r[k] for r in runs) for k in runs[0]} for name, runs in rounds.items()}
    print(json.dumps({"requests": args.requests, "rounds": rounds, "best": best,
                      "other": str(args.compare)}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
