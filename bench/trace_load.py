"""Send many requests through a real `keel serve` and count the traces it stored.

`python bench/trace_load.py` (20,000 requests, SQLite); `--postgres` uses a scratch
PostgreSQL database; `--outage 5` also cuts PostgreSQL off (through a local TCP proxy)
for 5 s in the middle. Keel is stopped with SIGTERM before counting, so what a clean
shutdown flushes counts too. JSON on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import create_engine, text

from overhead import Children, _keel_executable, children, free_port, start_stub, wait_until_ready
from tcp_proxy import TcpProxy

POSTGRES_ADMIN_URL = os.environ.get(
    "KEEL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
BODY = {"model": "stub", "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 16}


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def start_keel(running: Children, data_dir: Path, stub_url: str, database_url: str | None) -> str:
    config = data_dir / "keel.yaml"
    lines = [f"upstreams:\n  - name: stub\n    base_url: {stub_url}\n    models: [stub]\n"]
    if database_url:
        lines.append(f"database_url: {database_url}\n")
    config.write_text("".join(lines))
    port = free_port()
    argv = [str(_keel_executable()), "serve", "--no-local-model", "--no-embeddings",
            "--port", str(port), "--data-dir", str(data_dir), "--config", str(config),
            "--log-level", "warning"]  # fmt: skip
    env = {key: value for key, value in os.environ.items() if not key.startswith("KEEL_")}
    running.start("keel", argv, env)
    wait_until_ready(running, "keel", f"http://127.0.0.1:{port}/healthz", data_dir / "admin.key")
    return f"http://127.0.0.1:{port}"


async def load(
    base: str, key: str, requests: int, concurrency: int, proxy: TcpProxy | None, outage_s: float
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    ids: set[str] = set()
    failures: list[str] = []
    done = 0
    next_number = 0
    outage: dict[str, float] = {}

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done, next_number
        while next_number < requests:
            number, next_number = next_number, next_number + 1
            body = {**BODY, "stream": number % 4 == 0}
            async with session.post(f"{base}/v1/chat/completions", json=body) as response:
                await response.read()
                if response.status == 200:
                    ids.add(response.headers["X-Keel-Trace-Id"])
                elif len(failures) < 5:
                    failures.append(f"{response.status}")
            done += 1

    async def cut_in_the_middle() -> None:
        assert proxy is not None
        while done < requests // 3:  # noqa: ASYNC110 - a counter, not an event
            await asyncio.sleep(0.01)
        outage["at_request"] = done
        await proxy.cut()
        progress(f"PostgreSQL cut off after {done} requests, for {outage_s:g} s")
        await asyncio.sleep(outage_s)
        await proxy.start()
        outage["restored_at_request"] = done
        progress(f"PostgreSQL reachable again after {done} requests")

    started = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        tasks = [worker(session) for _ in range(concurrency)]
        if proxy is not None and outage_s > 0:
            tasks.append(cut_in_the_middle())
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
        async with session.get(f"{base}/metrics") as response:
            metrics = await response.text()
    return {"ok": len(ids), "failures": failures, "elapsed_s": round(elapsed, 2),
            "rps": round(requests / elapsed, 1), "metrics": metrics, "outage": outage,
            "ids": ids}  # fmt: skip


def metric(text_: str, name: str) -> float:
    total = 0.0
    for line in text_.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def count(url: str, ids: set[str]) -> tuple[int, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            stored = connection.execute(text("SELECT trace_id FROM traces")).scalars().all()
    finally:
        engine.dispose()
    return len(stored), len(ids & set(stored))


async def run(args: argparse.Namespace, tmp: Path, direct_url: str | None) -> dict[str, Any]:
    proxy = None
    keel_url = direct_url
    if direct_url and args.outage:
        proxy = TcpProxy("127.0.0.1", 5432)
        await proxy.start()
        keel_url = re.sub(r"@[^/]+/", f"@127.0.0.1:{proxy.port}/", direct_url)
    with children(tmp) as running:
        stub = start_stub(running, 0.0)
        data_dir = tmp / "data"
        data_dir.mkdir()
        base = await asyncio.to_thread(start_keel, running, data_dir, stub, keel_url)
        key = (data_dir / "admin.key").read_text().strip()
        progress(f"sending {args.requests:,} requests, {args.concurrency} at a time ...")
        result = await load(base, key, args.requests, args.concurrency, proxy, args.outage)
        spill_files = sorted((data_dir / "spill").glob("*.jsonl"))
        progress("stopping Keel (SIGTERM: a clean shutdown flushes the queue) ...")
        process = running._running["keel"]
        stop_started = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 120)
        stop_s = time.perf_counter() - stop_started
    if proxy is not None:
        await proxy.cut()
    url = direct_url or f"sqlite:///{data_dir / 'keel.db'}"
    stored, matching = await asyncio.to_thread(count, url, result["ids"])
    metrics = result.pop("metrics")
    result.pop("ids")
    return {
        "requests": args.requests, "concurrency": args.concurrency,
        "store": "postgresql" if direct_url else "sqlite", "outage_s": args.outage,
        **result, "stored": stored, "stored_of_answered": matching,
        "lost": args.requests - stored,
        "dropped_metric": metric(metrics, "keel_trace_records_dropped_total"),
        "spilled": metric(metrics, "keel_trace_records_spilled_total"),
        "replayed": metric(metrics, "keel_trace_records_replayed_total"),
        "spill_files_left_at_end_of_load": len(spill_files), "shutdown_s": round(stop_s, 2),
        "all_stored": stored == matching == result["ok"] == args.requests,
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--postgres", action="store_true", help="A scratch PostgreSQL database.")
    parser.add_argument("--outage", type=float, default=0.0, help="Seconds PostgreSQL is cut off.")
    args = parser.parse_args()
    if args.outage and not args.postgres:
        parser.error("--outage needs --postgres")
    scratch = f"keel_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    direct_url = None
    if args.postgres:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{scratch}"'))
        direct_url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{scratch}"
    try:
        with tempfile.TemporaryDirectory(prefix="keel-trace-load-") as tmp:
            result = asyncio.run(run(args, Path(tmp), direct_url))
    finally:
        if args.postgres:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))
        admin.dispose()
    progress(f"{result['stored']:,} of {result['requests']:,} traces stored "
             f"({result['lost']} lost, dropped metric {result['dropped_metric']:g})")  # fmt: skip
    print(json.dumps(result, indent=2))
    return 0 if result["all_stored"] else 1


if __name__ == "__main__":
    sys.exit(main())
