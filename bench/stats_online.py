"""What online evaluation scores cost GET /api/stats, on SQLite and on PostgreSQL.

`python bench/stats_online.py` fills a fresh store with synthetic traces as
bench/trace_data.py does, times /api/stats, then attaches online evaluation scores to a
share of the traces (two scorers each, as keel.evals.online writes them: source
`evaluator`, author `online:ROUTE`, the verdict kept) and times the same queries again,
on the same store in the same run. JSON on stdout, a table on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, text

from keel.store.db import Database
from keel.tracing.tables import ScoreRow, TraceRow
from trace_data import migrate_and_fill, scratch_store, time_queries

STATS = ("stats_24h_by_route", "stats_7d_by_model")


def add_online_scores(url: str, share: float, seed: int) -> int:
    """Two online scores (a pass/fail format check and latency) on `share` of the traces,
    each written 2 s after its trace started, as the evaluator's passes do."""
    database = Database(url)
    rng = random.Random(seed)
    with database.engine.connect() as connection:
        traces = connection.execute(
            select(TraceRow.trace_id, TraceRow.route, TraceRow.duration_ms, TraceRow.start_us)
        ).all()
    rows: list[dict[str, Any]] = []
    for trace_id, route, duration_ms, start_us in traces:
        if rng.random() >= share:
            continue
        author = f"online:{route}"
        good = rng.random() < 0.9
        common = {"project_id": "default", "trace_id": trace_id, "kind": "numeric",
                  "label": None, "comment": None, "source": "evaluator", "author": author,
                  "created_us": start_us + 2_000_000}  # fmt: skip
        rows.append({**common, "name": "format", "number": float(good), "flag": good})
        rows.append({**common, "name": "latency", "number": float(duration_ms),
                     "flag": duration_ms <= 2000})  # fmt: skip
    with database.engine.begin() as connection:
        for start in range(0, len(rows), 5000):
            connection.execute(insert(ScoreRow), rows[start : start + 5000])
        connection.execute(text("ANALYZE"))
    database.dispose()
    return len(rows)


def run_store(name: str, url: str, traces: int, days: int, rounds: int,
              share: float) -> dict[str, Any]:  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="keel-stats-online-") as tmp:
        migrate_and_fill(name, url, traces, days)
        before = asyncio.run(time_queries(Path(tmp), url, rounds))
        scores = add_online_scores(url, share, seed=2)
        after = asyncio.run(time_queries(Path(tmp), url, rounds))
    result: dict[str, Any] = {"store": name, "traces": traces, "online_scores": scores}
    for query in STATS:
        b, a = before[query]["median_ms"], after[query]["median_ms"]
        result[query] = {"without_ms": b, "with_ms": a, "ratio": round(a / b, 2) if b else None}
        print(f"{name:10} {query:20} without {b:8.1f} ms  with {a:8.1f} ms  "
              f"({scores:,} online scores)", file=sys.stderr)  # fmt: skip
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--traces", type=int, default=200_000, help="Traces to generate.")
    parser.add_argument("--days", type=int, default=7, help="Days the traces spread over.")
    parser.add_argument("--rounds", type=int, default=5, help="Timed runs of each query.")
    parser.add_argument("--share", type=float, default=0.1, help="Share of traces scored.")
    parser.add_argument("--stores", default="sqlite,postgresql", help="Which stores to test.")
    args = parser.parse_args()
    results = []
    for name in args.stores.split(","):
        with scratch_store(name) as url:
            results.append(run_store(name, url, args.traces, args.days, args.rounds, args.share))
    load = os.getloadavg()
    print(json.dumps({"results": results, "load_average": [round(x, 2) for x in load]},
                     indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
