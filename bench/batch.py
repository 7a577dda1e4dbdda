"""A batch of N lines through a real `keel serve`, side by side with live traffic at the same
concurrency, against a stub upstream that counts every call by line.

    python bench/batch.py --lines 10000 --concurrency 32

Prints JSON: the live req/s (C clients back to back), the batch's lines/s (upload to
completion, as the SDK sees it), their ratio, and the stub's count (calls, distinct lines,
most calls of one line). Run `python bench/batch.py --stub PORT` to get the stub alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
MODEL = "stub-model"
ANSWER_USAGE = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
CONCURRENCY = 32  # live clients, and the batch's jobs_concurrency


# -- the counting stub ---------------------------------------------------------------------


def stub_app() -> web.Application:
    seen: Counter[str] = Counter()

    async def chat(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        text = body["messages"][-1]["content"]
        seen[text] += 1
        answer = {
            "id": "chatcmpl-stub",
            "object": "chat.completion",
            "created": 1,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": text},
                }
            ],
            "usage": ANSWER_USAGE,
        }
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def count(_request: web.Request) -> web.Response:
        batch = {k: v for k, v in seen.items() if k.startswith("line-")}
        return web.json_response(
            {
                "calls": sum(seen.values()),
                "batch_calls": sum(batch.values()),
                "batch_distinct": len(batch),
                "most_calls_of_one_line": max(batch.values(), default=0),
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/count", count)
    return app


def run_stub(port: int) -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    web.run_app(stub_app(), host="127.0.0.1", port=port, print=None, access_log=None)


# -- Keel ----------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code < 500:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {timeout}s")


def start(
    data_dir: Path, stub_port: int, concurrency: int
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], str]:
    stub = subprocess.Popen([sys.executable, __file__, "--stub", str(stub_port)], cwd=ROOT)
    wait_http(f"http://127.0.0.1:{stub_port}/count")
    port = free_port()
    upstreams = [
        {"name": "stub", "base_url": f"http://127.0.0.1:{stub_port}/v1", "models": [MODEL]}
    ]
    env = {
        **os.environ,
        "KEEL_CONFIG": "/dev/null",
        "KEEL_UPSTREAMS": json.dumps(upstreams),
        "HF_HUB_OFFLINE": "1",
        "KEEL_JOBS_CONCURRENCY": str(concurrency),
    }
    log = (data_dir.parent / "serve.log").open("wb")
    keel = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "keel",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--no-local-model",
            "--no-embeddings",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/readyz")
    return stub, keel, base


# -- the two measurements ------------------------------------------------------------------


async def live(base: str, key: str, requests: int, concurrency: int) -> dict[str, Any]:
    """C clients send chat completions back to back; req/s over the whole run."""
    left = requests
    errors = 0
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    async def worker(session: aiohttp.ClientSession, n: int) -> None:
        nonlocal left, errors
        while left > 0:
            left -= 1
            body = {"model": MODEL, "messages": [{"role": "user", "content": f"live-{n}"}]}
            async with session.post(
                f"{base}/v1/chat/completions", data=orjson.dumps(body), headers=headers
            ) as response:
                await response.read()
                errors += response.status != 200

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session, i) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "requests": requests,
        "errors": errors,
        "seconds": round(elapsed, 2),
        "req_per_s": round(requests / elapsed, 1),
    }


def batch(base: str, key: str, lines: int) -> dict[str, Any]:
    """Upload N lines, create the batch, poll until it completes; lines/s from create to done."""
    content = b"".join(
        orjson.dumps(
            {
                "custom_id": f"c{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": MODEL, "messages": [{"role": "user", "content": f"line-{i}"}]},
            }
        )
        + b"\n"
        for i in range(lines)
    )
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=auth, timeout=120) as client:
        file = client.post(
            "/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}
        ).json()
        started = time.perf_counter()
        created = client.post(
            "/v1/batches",
            json={
                "input_file_id": file["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
        ).json()
        while True:
            state = client.get(f"/v1/batches/{created['id']}").json()
            if state["status"] in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        output = client.get(f"/v1/files/{state['output_file_id']}/content").text.splitlines()
    results = [orjson.loads(row) for row in output]
    matched = sum(
        r["response"]["body"]["choices"][0]["message"]["content"] == f"line-{r['custom_id'][1:]}"
        for r in results
    )
    return {
        "lines": lines,
        "status": state["status"],
        "counts": state["request_counts"],
        "output_lines": len(results),
        "distinct_custom_ids": len({r["custom_id"] for r in results}),
        "matched_by_custom_id": matched,
        "seconds": round(elapsed, 2),
        "lines_per_s": round(lines / elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--stub", type=int, help="only run the counting stub on this port")
    args = parser.parse_args()
    if args.stub:
        run_stub(args.stub)
        return
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        stub_port = free_port()
        stub, keel, base = start(data_dir, stub_port, args.concurrency)
        try:
            key = (data_dir / "admin.key").read_text().strip()
            asyncio.run(live(base, key, 500, args.concurrency))  # warm-up
            before = asyncio.run(live(base, key, args.lines, args.concurrency))
            run = batch(base, key, args.lines)
            after = asyncio.run(live(base, key, args.lines, args.concurrency))
            count = httpx.get(f"http://127.0.0.1:{stub_port}/count").json()
        finally:
            keel.terminate()
            keel.wait(30)
            stub.terminate()
            stub.wait(10)
    live_rate = (before["req_per_s"] + after["req_per_s"]) / 2
    print(
        json.dumps(
            {
                "concurrency": args.concurrency,
                "live_before": before,
                "batch": run,
                "live_after": after,
                "batch_share_of_live": round(run["lines_per_s"] / live_rate, 3),
                "stub": count,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
