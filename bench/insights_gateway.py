"""The gateway with insights on (every request sampled, MiniLM embedding in the background) and
off, side by side in one run against the stub upstream: requests per second, p50 and p99
latency, and how many sampled requests were embedded and dropped. Prints JSON.

    .venv/bin/python bench/insights_gateway.py [--duration 15] [--rounds 2] [--concurrency 8]
        [--priorities low,normal]

The Keels run at once (insights off, and one with insights on per priority of the thread
that embeds traffic); rounds alternate off, on, off, on, ... and each waits until the
insights Keel's queue is empty, so its embedding of one round never runs in another's
measurement. Requests are CLINC150 dev texts (short last user turns, like real traffic).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import Children, children, free_port, start_stub, wait_until_ready

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "insights" / "clinc150_dev.jsonl"
DRAIN_TIMEOUT_S = 300.0


def start_keel(
    running: Children, folder: Path, stub_url: str, sample_rate: float, priority: str = "low"
) -> dict[str, str]:
    """A Keel with tracing on; `sample_rate` 0 is insights off, else "insights-<priority>"
    embeds that share of requests in a child process of that priority (insights_priority),
    or with a "-thread" suffix ("low-thread") on a thread of Keel's (insights_process false);
    ":N" after the priority ("low:2") gives the child N threads (insights_threads)."""
    name = f"insights-{priority}" if sample_rate > 0 else "insights-off"
    priority, _, threads = priority.partition(":")
    process = not priority.endswith("-thread")
    priority = priority.removesuffix("-thread")
    data_dir = folder / name
    data_dir.mkdir()
    config = data_dir / "keel.yaml"
    config.write_text(
        f"upstreams:\n  - name: stub\n    base_url: {stub_url}\n    models: [stub]\n"
        f"tracing: true\ninsights_sample_rate: {sample_rate}\ninsights_queue_size: 100000\n"
        f"insights_priority: {priority}\ninsights_process: {str(process).lower()}\n"
        f"insights_threads: {threads or 1}\n"
    )
    port = free_port()
    keel = Path(sys.executable).with_name("keel")
    argv = [str(keel), "serve", "--no-local-model", "--port", str(port)]
    argv += ["--data-dir", str(data_dir), "--config", str(config), "--log-level", "warning"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    running.start(name, argv, env)
    key_file = data_dir / "admin.key"
    base = f"http://127.0.0.1:{port}"
    wait_until_ready(running, name, f"{base}/healthz", also=key_file)
    return {"name": name, "base": base, "key": key_file.read_text().strip()}


PRIORITIES_HELP = (
    "insights_priority of each insights-on Keel, comma-separated (low, idle, normal; with "
    "-thread, e.g. low-thread, on a thread of Keel's instead of a child process; with :N, e.g. "
    "low:2, a child of N threads)"
)


def request_texts(path: Path) -> list[str]:
    """The request texts of a JSONL file of {"text": ...} rows."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r["text"] for r in rows]


def start_keels(
    running: Children, folder: Path, stub_url: str, priorities: str
) -> list[dict[str, str]]:
    """Insights off, then one every-request-sampled Keel per comma-separated priority."""
    keels = [start_keel(running, folder, stub_url, 0.0)]
    names = [p.strip() for p in priorities.split(",") if p.strip()]
    return keels + [start_keel(running, folder, stub_url, 1.0, p) for p in names]


def metrics(keel: dict[str, str]) -> dict[str, float]:
    request = urllib.request.Request(
        f"{keel['base']}/metrics", headers={"Authorization": f"Bearer {keel['key']}"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        text = response.read().decode()
    found = {}
    for name in ("keel_insights_embedded_total", "keel_insights_dropped_total",
                 "keel_insights_queue_depth"):  # fmt: skip
        match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
        found[name] = float(match.group(1)) if match else 0.0
    return found


async def load(keel: dict[str, str], texts: list[str], concurrency: int, warmup: float,
               duration: float) -> dict[str, Any]:  # fmt: skip
    latencies: list[float] = []
    errors = 0
    headers = {"Authorization": f"Bearer {keel['key']}"}
    url = f"{keel['base']}/v1/chat/completions"
    rng = random.Random(0)
    begin = time.perf_counter()
    start, end = begin + warmup, begin + warmup + duration

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while (now := time.perf_counter()) < end:
            body = {"model": "stub", "max_tokens": 16,
                    "messages": [{"role": "user", "content": rng.choice(texts)}]}  # fmt: skip
            async with session.post(url, json=body, headers=headers) as response:
                await response.read()
                ok = response.status == 200
            done = time.perf_counter()
            if now >= start and done <= end:
                if ok:
                    latencies.append((done - now) * 1000)
                else:
                    errors += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))], 2)

    return {"rps": round(len(latencies) / duration, 1), "p50_ms": pct(50), "p99_ms": pct(99),
            "requests": len(latencies), "errors": errors}  # fmt: skip


def drain(keel: dict[str, str]) -> float:
    """Seconds until the insights queue is empty (the embedding caught up)."""
    started = time.monotonic()
    while time.monotonic() - started < DRAIN_TIMEOUT_S:
        if metrics(keel)["keel_insights_queue_depth"] == 0:
            return round(time.monotonic() - started, 2)
        time.sleep(0.2)
    return float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--stub-delay-ms", type=float, default=0.0)
    parser.add_argument("--priorities", default="low", help=PRIORITIES_HELP)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    texts = request_texts(args.data)
    rounds: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as temp, children(Path(temp)) as running:
        stub = start_stub(running, args.stub_delay_ms)
        keels = start_keels(running, Path(temp), stub, args.priorities)
        for keel in keels:
            rounds[keel["name"]] = []
            # Load the embedding model before measuring: the first request starts it.
            uvloop.run(load(keel, texts, 1, 0.0, 1.0))
            drain(keel)
        for _ in range(args.rounds):
            for keel in keels:
                before = metrics(keel)
                result: dict[str, Any] = {
                    "load_average_before": [round(x, 2) for x in os.getloadavg()]
                }
                result |= uvloop.run(load(keel, texts, args.concurrency, args.warmup,
                                          args.duration))  # fmt: skip
                result["drain_s"] = drain(keel)
                after = metrics(keel)
                if keel["name"] != "insights-off":
                    sent = result["requests"] + result["errors"]
                    embedded = (
                        after["keel_insights_embedded_total"]
                        - before["keel_insights_embedded_total"]
                    )
                    result["embedded"] = int(embedded)
                    result["dropped"] = int(
                        after["keel_insights_dropped_total"] - before["keel_insights_dropped_total"]
                    )
                    result["measured_requests"] = sent
                    # Everything sent this round (warm-up included) over the time to embed it.
                    result["embedded_per_second"] = round(
                        embedded / (args.warmup + args.duration + result["drain_s"]), 1
                    )
                rounds[keel["name"]].append(result)
                print(keel["name"], json.dumps(result), file=sys.stderr, flush=True)

    def median(name: str, key: str) -> float:
        values = sorted(r[key] for r in rounds[name])
        return float(values[len(values) // 2])

    summary = {
        name: {
            key: median(name, key)
            for key in ("rps", "p50_ms", "p99_ms", "embedded_per_second")
            if key in runs[0]
        }
        | ({"dropped": sum(r["dropped"] for r in runs)} if "dropped" in runs[0] else {})
        for name, runs in rounds.items()
    }
    print(json.dumps({"summary": summary, "rounds": rounds, "concurrency": args.concurrency,
                      "duration_s": args.duration, "cpus": os.cpu_count(),
                      "load_average": os.getloadavg()}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
