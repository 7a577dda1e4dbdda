"""The gateway at a fixed arrival rate (open loop) with insights on and off, side by side in
one run against the stub upstream: latency p50/p95/p99, the rate achieved, and how many
sampled requests were embedded per second and dropped. Prints JSON.

    .venv/bin/python bench/insights_openloop.py [--rate 200] [--duration 20] [--rounds 3]
        [--priorities low,low-thread]

Requests leave on a fixed schedule (one every 1/rate s, whatever the answers do), and each
latency is counted from the moment its request was due, so a stalled gateway cannot hide
its queue by slowing the sender. Every request is sampled (insights_sample_rate 1.0) in the
insights-on Keels, one per priority of the thread that embeds traffic (insights_priority).
All Keels run at once and the segments interleave: off, on-low, on-normal, off, ...; each
waits until every queue is empty, so one segment's embedding never runs in another's.
Requests are CLINC150 dev texts (short last user turns, like real traffic).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from insights_gateway import (
    DEFAULT_DATA,
    PRIORITIES_HELP,
    drain,
    metrics,
    request_texts,
    start_keels,
)
from overhead import children, start_stub

REQUEST_TIMEOUT_S = 30.0


async def open_loop(keel: dict[str, str], texts: list[str], rate: float, warmup: float,
                    duration: float, seed: int) -> dict[str, Any]:  # fmt: skip
    """Send `rate` requests a second for warmup + duration seconds; measure the last part."""
    headers = {"Authorization": f"Bearer {keel['key']}"}
    url = f"{keel['base']}/v1/chat/completions"
    rng = random.Random(seed)
    latencies: list[float] = []
    errors = 0
    late_ms: list[float] = []  # how far behind schedule the sender was (its own health)
    total = int((warmup + duration) * rate)
    first_measured = int(warmup * rate)

    async def one(session: aiohttp.ClientSession, due: float, measured: bool) -> None:
        nonlocal errors
        body = {"model": "stub", "max_tokens": 16,
                "messages": [{"role": "user", "content": rng.choice(texts)}]}  # fmt: skip
        try:
            async with session.post(url, json=body, headers=headers) as response:
                await response.read()
                ok = response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        if measured:
            if ok:
                latencies.append((time.perf_counter() - due) * 1000)
            else:
                errors += 1

    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=0)  # open loop: never queue in the client pool
    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     trust_env=False) as session:  # fmt: skip
        tasks = []
        start = time.perf_counter() + 0.05
        for i in range(total):
            due = start + i / rate
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            if i >= first_measured:
                late_ms.append(max(0.0, (time.perf_counter() - due) * 1000))
            tasks.append(asyncio.create_task(one(session, due, i >= first_measured)))
        await asyncio.gather(*tasks)
    latencies.sort()
    late_ms.sort()

    def pct(values: list[float], p: float) -> float:
        if not values:
            return float("nan")
        return round(values[min(len(values) - 1, int(p / 100 * len(values)))], 2)

    return {"rate_sent": rate, "achieved_rps": round(len(latencies) / duration, 1),
            "p50_ms": pct(latencies, 50), "p95_ms": pct(latencies, 95),
            "p99_ms": pct(latencies, 99), "max_ms": pct(latencies, 100),
            "requests": len(latencies), "errors": errors,
            "sender_late_p99_ms": pct(late_ms, 99)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second sent")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--priorities", default="low,low-thread", help=PRIORITIES_HELP)
    parser.add_argument("--stub-delay-ms", type=float, default=0.0)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    texts = request_texts(args.data)
    segments: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as temp, children(Path(temp)) as running:
        stub = start_stub(running, args.stub_delay_ms)
        keels = start_keels(running, Path(temp), stub, args.priorities)
        for keel in keels:
            segments[keel["name"]] = []
            # The first request starts the model's loading; its first batches are slow.
            uvloop.run(open_loop(keel, texts, 50, 0.0, 2.0, seed=-1))
            drain(keel)
        for number in range(args.rounds):
            for keel in keels:
                before = metrics(keel)
                load_average = [round(x, 2) for x in os.getloadavg()]
                segment: dict[str, Any] = {"round": number, "load_average_before": load_average}
                began = time.monotonic()
                segment |= uvloop.run(open_loop(keel, texts, args.rate, args.warmup,
                                                args.duration, seed=number))  # fmt: skip
                sent_for = time.monotonic() - began
                during = metrics(keel)
                segment["drain_s"] = drain(keel)
                after = metrics(keel)
                if keel["name"] != "insights-off":
                    embedded = (
                        during["keel_insights_embedded_total"]
                        - before["keel_insights_embedded_total"]
                    )
                    segment["embedded_per_second"] = round(embedded / sent_for, 1)
                    segment["queue_depth_at_end"] = int(during["keel_insights_queue_depth"])
                    segment["embedded"] = int(
                        after["keel_insights_embedded_total"]
                        - before["keel_insights_embedded_total"]
                    )
                    segment["dropped"] = int(
                        after["keel_insights_dropped_total"] - before["keel_insights_dropped_total"]
                    )
                segments[keel["name"]].append(segment)
                print(keel["name"], json.dumps(segment), file=sys.stderr, flush=True)

    def median(name: str, key: str) -> float:
        values = sorted(s[key] for s in segments[name])
        return float(values[len(values) // 2])

    keys = ("achieved_rps", "p50_ms", "p95_ms", "p99_ms", "embedded_per_second",
            "queue_depth_at_end")  # fmt: skip
    summary = {
        name: {key: median(name, key) for key in keys if key in runs[0]}
        | ({"dropped": sum(s["dropped"] for s in runs)} if "dropped" in runs[0] else {})
        for name, runs in segments.items()
    }
    print(json.dumps({"summary (medians of the segments)": summary, "segments": segments,
                      "rate": args.rate, "duration_s": args.duration, "cpus": os.cpu_count(),
                      "load_average_after": os.getloadavg()}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
