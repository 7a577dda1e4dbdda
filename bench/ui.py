"""Time the console's overview and traces pages over a million stored spans.

`python bench/ui.py` fills a fresh store with 200,000 traces (5 spans each: 1,000,000
spans) over 7 days with bench/trace_data.py, signs in to the console in process, and times
the server's answer to the pages (one warm-up, median of 5). JSON on stdout, a table on
stderr. `--stores sqlite,postgresql` adds a scratch PostgreSQL database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from keel.server.app import create_app
from keel.server.services import build_services, stop_services
from keel.settings import Settings
from keel.store.db import Database
from trace_data import SPANS_PER_TRACE, migrate_and_fill, scratch_store

TARGET_MS = 1000.0
PAGES = {
    "overview_24h": "/ui/?range=24h",
    "overview_24h_by_route": "/ui/?range=24h&by=route",
    "overview_1h_by_model": "/ui/?range=1h&by=model",
    "overview_7d": "/ui/?range=7d",
    "traces_first_page": "/ui/traces",
    "traces_errors_of_a_route": "/ui/traces?model=route-3&status=error",
    "traces_of_a_user": "/ui/traces?user=user-42",
    "trace_detail": "",  # filled in with the newest trace
}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def time_pages(data_dir: Path, url: str, rounds: int) -> dict[str, dict[str, Any]]:
    settings = Settings.model_validate(
        {"data_dir": data_dir, "database_url": url, "local_model": False, "embeddings": False}
    )
    services = build_services(settings, Database(url))
    key = services.keys.bootstrap_admin(data_dir) or (data_dir / "admin.key").read_text().strip()
    services.keys.load_cache()
    app = create_app(settings, services=services)
    found: dict[str, dict[str, Any]] = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://keel") as client:
        form = await client.get("/ui/login")
        token = CSRF.search(form.text)
        assert token is not None
        signed_in = await client.post("/ui/login", data={"api_key": key, "csrf_token": token[1]})
        assert signed_in.status_code == 303, signed_in.text
        newest = re.search(
            r'href="(/ui/traces/[0-9a-f]{32})"', (await client.get("/ui/traces")).text
        )
        assert newest is not None
        pages = {**PAGES, "trace_detail": newest[1]}
        for name, path in pages.items():
            times = []
            for _ in range(rounds + 1):  # the first round warms caches and is not counted
                started = time.perf_counter()
                response = await client.get(path, timeout=120)
                times.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(f"{path} answered {response.status_code}")
            found[name] = {"path": path, "median_ms": round(statistics.median(times[1:]), 1),
                           "max_ms": round(max(times[1:]), 1),
                           "kb": round(len(response.content) / 1024, 1)}  # fmt: skip
    await stop_services(services)
    return found


def run_store(name: str, url: str, traces: int, days: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="keel-ui-bench-") as tmp:
        fill_s = migrate_and_fill(name, url, traces, days)
        pages = asyncio.run(time_pages(Path(tmp), url, rounds))
    for page, result in pages.items():
        line = f"{name:10} {page:26} median {result['median_ms']:8.1f} ms  "
        line += f"max {result['max_ms']:8.1f} ms  {result['kb']:6.1f} KiB"
        print(line, file=sys.stderr)
    return {"store": name, "traces": traces, "spans": traces * SPANS_PER_TRACE,
            "fill_s": round(fill_s, 1), "pages": pages}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--traces", type=int, default=200_000, help="Traces to generate.")
    parser.add_argument("--days", type=int, default=7, help="Days the traces spread over.")
    parser.add_argument("--rounds", type=int, default=5, help="Timed loads of each page.")
    parser.add_argument("--stores", default="sqlite", help="sqlite, postgresql or both.")
    args = parser.parse_args()
    results = []
    for name in args.stores.split(","):
        with scratch_store(name) as url:
            results.append(run_store(name, url, args.traces, args.days, args.rounds))
    goals = {
        f"{r['store']}:{page}": {"target_ms": TARGET_MS, "median_ms": result["median_ms"],
                                 "met": result["median_ms"] < TARGET_MS}
        for r in results for page, result in r["pages"].items()
        if page in ("overview_24h", "overview_24h_by_route", "traces_first_page")
    }  # fmt: skip
    # Timings are wall time: on a shared machine, other work inflates them (see the load).
    load = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps({"results": results, "goals": goals, "load_average": load,
                      "cpus": os.cpu_count()}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
