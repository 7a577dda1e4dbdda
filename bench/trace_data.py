"""Time the trace queries over a million spans, on SQLite and on PostgreSQL.

`python bench/trace_data.py` fills a fresh store with 200,000 traces (5 spans each) spread
over 7 days, then times GET /api/stats (last 24 h, by route) and the first page of
GET /api/traces through the real app. JSON on stdout, a table on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import create_engine, text

from keel.server.app import create_app
from keel.server.services import build_services, stop_services
from keel.settings import Settings
from keel.store import migrate
from keel.store.db import Database
from keel.tracing.convert import Converted, span

DAY_US = 86_400 * 1_000_000
SPANS_PER_TRACE = 5
ROUTES = [f"route-{n}" for n in range(8)]
TARGETS = {route: [f"{route}-model@{v}" for v in (1, 2)] for route in ROUTES}
POSTGRES_ADMIN_URL = os.environ.get(
    "KEEL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
TARGETS_MS = {"stats_24h_by_route": 500.0, "traces_first_page": 200.0}


def synthetic(number: int, now_us: int, days: int, rng: random.Random) -> Converted:
    """One plausible trace: a route, a version, a key, a user, latency, tokens, cost."""
    start_us = now_us - rng.randrange(days * DAY_US)
    trace_id = f"{start_us // 1000:012x}{number:020x}"
    route = rng.choice(ROUTES)
    duration = rng.lognormvariate(6.0, 0.8)  # ms; median about 400
    streamed = rng.random() < 0.5
    error = rng.random() < 0.04
    tokens_in, tokens_out = rng.randrange(10, 2000), rng.randrange(1, 800)
    row: dict[str, Any] = {
        "trace_id": trace_id, "project_id": "default", "key_id": f"key{rng.randrange(20)}",
        "start_us": start_us, "duration_ms": duration,
        "ttft_ms": duration * rng.uniform(0.05, 0.3) if streamed else None,
        "operation": "chat", "model": route, "route": route,
        "target": rng.choice(TARGETS[route]), "provider": "vllm",
        "user": f"user-{rng.randrange(5000)}", "session_id": f"s-{rng.randrange(50_000)}",
        "prompt_name": "support" if rng.random() < 0.3 else None,
        "prompt_version": rng.randrange(1, 4) if rng.random() < 0.3 else None,
        "status": "error" if error else "ok", "error_type": "upstream_error" if error else None,
        "http_status": 502 if error else 200, "attempts": 1, "input_tokens": tokens_in,
        "output_tokens": tokens_out, "cost": (tokens_in * 0.5 + tokens_out * 1.5) / 1e6,
        "metadata": {"feature": rng.choice(["faq", "chat", "summary"])},
        "input": f'[{{"role":"user","content":"question number {number}"}}]',
        "output": f"answer number {number} " * 4, "input_sha256": None, "output_sha256": None,
        "input_bytes": None, "output_bytes": None,
    }  # fmt: skip
    start_ns, end_ns = start_us * 1000, start_us * 1000 + int(duration * 1e6)
    ids = [f"{number:012x}{k:04x}" for k in range(SPANS_PER_TRACE)]
    spans = [
        span(trace_id, ids[0], None, f"chat {route}", "server", start_ns, end_ns, row["status"],
             {"gen_ai.operation.name": "chat", "gen_ai.request.model": route,
              "gen_ai.usage.input_tokens": tokens_in, "gen_ai.usage.output_tokens": tokens_out}),
        span(trace_id, ids[1], ids[0], "keel.auth", "internal", start_ns, start_ns + 20_000,
             "ok", {"keel.step": "auth"}),
        span(trace_id, ids[2], ids[0], "keel.prompt", "internal", start_ns + 20_000,
             start_ns + 40_000, "ok", {"keel.step": "prompt"}),
        span(trace_id, ids[3], ids[0], "keel.route", "internal", start_ns + 40_000, end_ns,
             row["status"], {"keel.route": route}),
        span(trace_id, ids[4], ids[3], f"chat {route}-upstream", "client", start_ns + 50_000,
             end_ns, row["status"], {"keel.target": row["target"]}),
    ]  # fmt: skip
    return Converted(row, orjson.dumps(spans).decode())


def fill(database: Database, traces: int, days: int, seed: int) -> float:
    from keel.tracing.store import TraceStore

    store = TraceStore(database)
    rng = random.Random(seed)
    now_us = time.time_ns() // 1000
    started = time.perf_counter()
    batch: list[Converted] = []
    for number in range(traces):
        batch.append(synthetic(number, now_us, days, rng))
        if len(batch) == 5000:
            store.write(batch)
            batch = []
    if batch:
        store.write(batch)
    with database.engine.begin() as connection:
        connection.execute(text("ANALYZE"))
    return time.perf_counter() - started


async def time_queries(data_dir: Path, url: str, rounds: int) -> dict[str, dict[str, float]]:
    settings = Settings.model_validate(
        {"data_dir": data_dir, "database_url": url, "local_model": False, "embeddings": False}
    )
    database = Database(url)
    services = build_services(settings, database)
    key = services.keys.bootstrap_admin(data_dir) or (data_dir / "admin.key").read_text().strip()
    services.keys.load_cache()
    app = create_app(settings, services=services)
    headers = {"Authorization": f"Bearer {key}"}
    queries = {
        "stats_24h_by_route": ("/api/stats", {"since": "24h", "by": "route", "bucket": 3600}),
        "stats_7d_by_model": ("/api/stats", {"since": "7d", "by": "model", "bucket": 86400}),
        "traces_first_page": ("/api/traces", {"limit": 50}),
        "traces_by_user": ("/api/traces", {"user": "user-42", "limit": 50}),
        "traces_by_route_errors": ("/api/traces", {"model": "route-3", "status": "error"}),
    }
    found: dict[str, dict[str, float]] = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://keel") as client:
        for name, (path, params) in queries.items():
            times = []
            for _ in range(rounds + 1):  # the first round warms caches and is not counted
                started = time.perf_counter()
                response = await client.get(path, params=params, headers=headers, timeout=120)
                times.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(f"{path} answered {response.status_code}: {response.text}")
            rows = len(response.json()["data"])
            found[name] = {"median_ms": round(statistics.median(times[1:]), 1),
                           "max_ms": round(max(times[1:]), 1), "rows": rows}  # fmt: skip
    await stop_services(services)
    return found


@contextmanager
def scratch_store(name: str) -> Iterator[str]:
    """The URL of a new, empty database of this kind (sqlite or postgresql), removed after."""
    if name == "sqlite":
        with tempfile.TemporaryDirectory(prefix="keel-trace-sqlite-") as tmp:
            yield f"sqlite:///{tmp}/keel.db"
        return
    scratch = f"keel_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{scratch}"'))
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{scratch}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))
        admin.dispose()


def migrate_and_fill(name: str, url: str, traces: int, days: int) -> float:
    """Create the schema and write the synthetic traces; seconds it took to fill."""
    database = Database(url)
    migrate.upgrade(database)
    print(f"{name}: writing {traces:,} traces ({traces * SPANS_PER_TRACE:,} spans) ...",
          file=sys.stderr, flush=True)  # fmt: skip
    fill_s = fill(database, traces, days, seed=1)
    database.dispose()
    return fill_s


def run_store(name: str, url: str, traces: int, days: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="keel-trace-data-") as tmp:
        fill_s = migrate_and_fill(name, url, traces, days)
        queries = asyncio.run(time_queries(Path(tmp), url, rounds))
    for query, result in queries.items():
        line = f"{name:10} {query:24} median {result['median_ms']:8.1f} ms  "
        line += f"max {result['max_ms']:8.1f} ms  rows {result['rows']}"
        print(line, file=sys.stderr)
    return {"store": name, "traces": traces, "spans": traces * SPANS_PER_TRACE,
            "fill_s": round(fill_s, 1), "queries": queries}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--traces", type=int, default=200_000, help="Traces to generate.")
    parser.add_argument("--days", type=int, default=7, help="Days the traces spread over.")
    parser.add_argument("--rounds", type=int, default=5, help="Timed runs of each query.")
    parser.add_argument("--stores", default="sqlite,postgresql", help="Which stores to test.")
    args = parser.parse_args()
    results = []
    for name in args.stores.split(","):
        with scratch_store(name) as url:
            results.append(run_store(name, url, args.traces, args.days, args.rounds))
    goals = {
        f"{r['store']}:{query}": {"target_ms": limit,
                                  "median_ms": r["queries"][query]["median_ms"],
                                  "met": r["queries"][query]["median_ms"] < limit}
        for r in results for query, limit in TARGETS_MS.items()
    }  # fmt: skip
    print(json.dumps({"results": results, "goals": goals}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
