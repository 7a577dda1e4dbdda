"""No trace lost: 20,000 requests through Keel as fast as it answers, then count the traces.

`python bench/no_loss.py` stores traces in SQLite; `--store postgresql` uses a fresh
PostgreSQL database (created with psql as user postgres, dropped afterwards) and stops
the PostgreSQL server itself for `--outage` seconds (default 10) a third of the way in,
then starts it again. After the load, Keel keeps running until every answered request's
trace is in the store (or `--settle` seconds pass); then it is stopped with SIGTERM and the
store is counted once more. JSON on stdout, progress on stderr; exit 1 if a trace is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import create_engine, text

from overhead import BenchError, _interrupt, _progress, children, machine, start_stub
from systems import ROUTE, System, start_keel

PSQL = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-qAtc"]


def _cluster() -> list[str]:
    versions = sorted(os.listdir("/etc/postgresql"))
    if not versions:
        raise BenchError("no cluster under /etc/postgresql; --store postgresql needs one")
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main"]


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed: {done.stderr.strip()}")


def _postgres_up() -> bool:
    done = subprocess.run([*PSQL, "SELECT 1"], capture_output=True, timeout=10, check=False)
    return done.returncode == 0


class Outage:
    """Stops the PostgreSQL server once `at` requests are answered, starts it `seconds` later."""

    def __init__(self, at: int, seconds: float):
        self.at = at
        self.seconds = seconds
        self.report: dict[str, Any] = {}

    async def run(self, answered: list[int]) -> None:
        while answered[0] < self.at:  # noqa: ASYNC110 - a counter, not an event
            await asyncio.sleep(0.01)
        cluster = _cluster()
        self.report["stop_begun_at_answer"] = answered[0]
        await asyncio.to_thread(_run, [*cluster, "stop"])
        stopped = time.monotonic()
        self.report["stopped_at_answer"] = answered[0]
        _progress(f"PostgreSQL stopped after {answered[0]:,} answers; {self.seconds:g} s down")
        await asyncio.sleep(self.seconds)
        await asyncio.to_thread(_run, [*cluster, "start"])
        self.report["down_s"] = round(time.monotonic() - stopped, 1)
        self.report["started_at_answer"] = answered[0]
        _progress(f"PostgreSQL started again after {answered[0]:,} answers")


async def load(
    system: System, requests: int, concurrency: int, outage: Outage | None
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {system.api_key}"}
    ids: set[str] = set()
    failures: dict[str, int] = {}
    answered = [0]
    queue = iter(range(requests))

    async def worker(session: aiohttp.ClientSession) -> None:
        for number in queue:
            body = {
                "model": ROUTE,
                "messages": [{"role": "user", "content": "Say hi"}],
                "max_tokens": 16,
                "stream": number % 4 == 0,
            }
            try:
                async with session.post(f"{system.url}/chat/completions", json=body) as response:
                    await response.read()
                    if response.status == 200:
                        ids.add(response.headers["X-Keel-Trace-Id"])
                    else:
                        failures[str(response.status)] = failures.get(str(response.status), 0) + 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
            answered[0] += 1

    started = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        tasks = [asyncio.create_task(worker(session)) for _ in range(concurrency)]
        side = asyncio.create_task(outage.run(answered)) if outage else None
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
        if side is not None:
            await side  # the server must be back before counting
    return {
        "answered": len(ids),
        "failures": failures,
        "elapsed_s": round(elapsed, 2),
        "rps": round(requests / elapsed, 1),
        "ids": ids,
    }


def stored_ids(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return set(connection.execute(text("SELECT trace_id FROM traces")).scalars())
    finally:
        engine.dispose()


async def metrics(system: System) -> dict[str, float]:
    names = (
        "keel_trace_records_dropped_total",
        "keel_trace_records_spilled_total",
        "keel_trace_records_replayed_total",
        "keel_trace_records_written_total",
    )
    headers = {"Authorization": f"Bearer {system.api_key}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        url = system.url.removesuffix("/v1") + "/metrics"
        async with session.get(url) as response:
            body = await response.text()
    found = dict.fromkeys(names, 0.0)
    for line in body.splitlines():
        for name in names:
            if line.startswith(name) and not line.startswith("#"):
                found[name] += float(line.rsplit(" ", 1)[1])
    return {name.removeprefix("keel_trace_records_"): value for name, value in found.items()}


async def wait_for_traces(url: str, ids: set[str], settle_s: float) -> tuple[int, float]:
    """Poll the store until it holds every answered trace id; return (held, seconds waited)."""
    started = time.monotonic()
    while True:
        held = len(ids & await asyncio.to_thread(stored_ids, url))
        waited = time.monotonic() - started
        if held == len(ids) or waited > settle_s:
            return held, round(waited, 1)
        await asyncio.sleep(1.0)


async def run(args: argparse.Namespace, tmp: Path, database_url: str | None) -> dict[str, Any]:
    with children(tmp) as running:
        stub_url = start_stub(running, 0.0)
        system = await asyncio.to_thread(
            start_keel,
            running,
            tmp,
            stub_url,
            "keel",
            tracing=True,
            limits=False,
            database_url=database_url,
        )
        url = database_url or f"sqlite:///{tmp / 'keel' / 'keel.db'}"
        outage = Outage(args.requests // 3, args.outage) if database_url and args.outage else None
        _progress(f"sending {args.requests:,} requests, {args.concurrency} at a time ...")
        result = await load(system, args.requests, args.concurrency, outage)
        ids = result.pop("ids")
        held, waited = await wait_for_traces(url, ids, args.settle)
        counters = await metrics(system)
        _progress(
            f"{held:,} of {len(ids):,} answered traces stored while Keel ran "
            f"({waited:g} s after the load)"
        )
        process = running._running["keel"]
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 120)
    final = await asyncio.to_thread(stored_ids, url)
    report = outage.report if outage else {}
    return {
        "store": args.store,
        "requests": args.requests,
        "concurrency": args.concurrency,
        **result,
        "outage": report,
        "stored_while_running": held,
        "waited_after_load_s": waited,
        "stored_after_shutdown": len(final & ids),
        "rows_in_store": len(final),
        "lost": len(ids - final),
        "counters": counters,
        "all_stored": len(ids) == args.requests and ids <= final and len(final) == len(ids),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000, help="Requests to send.")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=32,
        help="Requests in flight (closed loop: Keel's top rate).",
    )
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--outage",
        type=float,
        default=10.0,
        help="Seconds PostgreSQL is stopped (postgresql only; 0: none).",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=120.0,
        help="Seconds to wait after the load for every trace to arrive.",
    )
    parser.add_argument("--json-out", type=Path, default=None, help="Also write the JSON here.")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    database = f"keel_noloss_{uuid.uuid4().hex[:10]}"
    database_url = None
    try:
        if args.store == "postgresql":
            if not _postgres_up():
                raise BenchError("PostgreSQL does not answer on 127.0.0.1:5432 as postgres")
            _run([*PSQL, f'CREATE DATABASE "{database}"'])
            database_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
        with tempfile.TemporaryDirectory(prefix="keel-no-loss-") as tmp:
            result = asyncio.run(run(args, Path(tmp), database_url))
    except BenchError as exc:
        _progress(f"no_loss failed: {exc}")
        return 1
    except KeyboardInterrupt:
        _progress("interrupted; child processes stopped")
        return 130
    finally:
        if database_url:
            if not _postgres_up():
                _run([*_cluster(), "start"])  # never leave the server down
            _run([*PSQL, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'])
    result = {"machine": machine(), **result}
    text_ = json.dumps(result, indent=2)
    if args.json_out:
        args.json_out.write_text(text_ + "\n")
    print(text_)
    _progress(
        f"{result['stored_after_shutdown']:,} of {result['requests']:,} traces stored, "
        f"{result['lost']} lost"
    )
    return 0 if result["all_stored"] else 1


if __name__ == "__main__":
    sys.exit(main())
