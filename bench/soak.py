"""Steady-rate soak against Keel: does its memory stay flat over a long run?

`python bench/soak.py` (30 minutes at 50 req/s) starts the stub and Keel (auth with an
app key with in-process limits, a route over two targets, tracing to SQLite), sends
requests at a fixed rate (every fourth streamed) and samples the RSS of Keel's process
tree every `--sample` seconds. JSON on stdout; a line per sample on stderr.

`--memtrace DIR` runs Keel with tracemalloc on (bench/memtrace_site) and has it write heap
snapshots to DIR at the `--memtrace-at` times; `python bench/memtrace.py DIR` diffs them.
`--keel-env NAME=VALUE` passes extra environment to Keel (e.g. MALLOC_ARENA_MAX=2).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvloop

from overhead import BENCH_DIR, BenchError, _interrupt, _progress, children, machine, start_stub
from systems import ROUTE, System, rss_bytes, start_keel

_MAX_IN_FLIGHT = 256


@dataclass(slots=True)
class Counts:
    sent: int = 0
    ok: int = 0
    errors: int = 0
    skipped: int = 0  # due while _MAX_IN_FLIGHT were still open: Keel fell behind
    first_error: str | None = None
    in_flight: int = 0
    samples: list[tuple[float, int]] = field(default_factory=list)


def _body(stream: bool) -> bytes:
    payload: dict[str, Any] = {
        "model": ROUTE,
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "Say hi"}],
    }
    if stream:
        payload["stream"] = True
    return orjson.dumps(payload)


async def _one(session: aiohttp.ClientSession, url: str, body: bytes, counts: Counts) -> None:
    counts.in_flight += 1
    try:
        async with session.post(url, data=body) as response:
            data = await response.read()
            if response.status == 200:
                counts.ok += 1
                return
            detail = f"HTTP {response.status}: {data[:200]!r}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        detail = f"{type(exc).__name__}: {exc}"
    finally:
        counts.in_flight -= 1
    counts.errors += 1
    counts.first_error = counts.first_error or detail


async def soak(
    system: System,
    rate: float,
    duration_s: float,
    sample_s: float,
    snapshot_at: tuple[float, ...] = (),
) -> Counts:
    counts = Counts()
    snapshots = sorted(snapshot_at)
    bodies = [_body(n % 4 == 0) for n in range(4)]
    url = f"{system.url}/chat/completions"
    headers = {"Authorization": f"Bearer {system.api_key}", "Content-Type": "application/json"}
    tasks: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=64)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(
        headers=headers, connector=connector, timeout=timeout
    ) as session:
        started = time.monotonic()
        next_send = started
        next_sample = started
        while (now := time.monotonic()) < started + duration_s:
            if now >= next_sample:
                rss = rss_bytes(system.pid)
                counts.samples.append((round(now - started, 1), rss))
                _progress(
                    f"{now - started:7.0f} s  RSS {rss / 2**20:7.1f} MB  sent "
                    f"{counts.sent:,}  errors {counts.errors}  late {counts.skipped}"
                )
                next_sample += sample_s
            if snapshots and now - started >= snapshots[0]:
                snapshots.pop(0)
                os.kill(system.pid, signal.SIGUSR1)  # memtrace_site writes a heap snapshot
                _progress(f"{now - started:7.0f} s  heap snapshot requested")
            # Open loop: requests leave on schedule whether or not earlier ones returned.
            while next_send <= now:
                next_send += 1 / rate
                if counts.in_flight >= _MAX_IN_FLIGHT:
                    counts.skipped += 1
                    continue
                task = asyncio.create_task(_one(session, url, bodies[counts.sent % 4], counts))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                counts.sent += 1
            await asyncio.sleep(max(0.0, min(next_send, next_sample) - time.monotonic()))
        await asyncio.gather(*tasks)
        counts.samples.append((round(time.monotonic() - started, 1), rss_bytes(system.pid)))
    return counts


def summarise(counts: Counts, warmup_s: float, rss_idle: int) -> dict[str, Any]:
    """Start is the first sample after the warm-up, so start-up allocations do not count."""
    settled = [s for s in counts.samples if s[0] >= warmup_s] or counts.samples
    start, end = settled[0][1], settled[-1][1]
    # Growth over the second half only: a cache still filling after the warm-up shows as
    # growth overall but not here; a leak shows in both.
    half = [s for s in settled if s[0] >= (settled[0][0] + settled[-1][0]) / 2] or settled
    peak = max(rss for _, rss in counts.samples)

    def mb(value: int) -> float:
        return round(value / 2**20, 1)

    return {
        "rss_idle_mb": mb(rss_idle),
        "rss_start_mb": mb(start),
        "rss_end_mb": mb(end),
        "rss_max_mb": mb(peak),
        "growth_pct": round((end - start) / start * 100, 2),
        "growth_second_half_pct": round((end - half[0][1]) / half[0][1] * 100, 2),
        "second_half_from_s": half[0][0],
        "start_at_s": settled[0][0],
        "requests_sent": counts.sent,
        "ok": counts.ok,
        "errors": counts.errors,
        "late_not_sent": counts.skipped,
        "first_error": counts.first_error,
        "samples": [{"t_s": t, "rss_mb": mb(rss)} for t, rss in counts.samples],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=1800.0, help="Seconds of load.")
    parser.add_argument("--rate", type=float, default=50.0, help="Requests per second.")
    parser.add_argument("--sample", type=float, default=30.0, help="Seconds between samples.")
    parser.add_argument(
        "--warmup", type=float, default=60.0, help="Seconds of load before the start sample."
    )
    parser.add_argument("--json-out", type=Path, default=None, help="Also write the JSON here.")
    parser.add_argument(
        "--memtrace",
        type=Path,
        default=None,
        help="Run Keel under tracemalloc and write heap snapshots to this directory "
        "(memory and CPU grow with it: for finding growth, not for the RSS figure).",
    )
    parser.add_argument(
        "--memtrace-at",
        default="60,300,600,900",
        help="Comma-separated seconds of load at which to take heap snapshots; tracing starts "
        "at the first, so later ones show what grew since.",
    )
    parser.add_argument(
        "--memtrace-trim",
        action="store_true",
        help="After each snapshot, malloc_trim(0) and record RSS again (fragmentation check).",
    )
    parser.add_argument(
        "--keel-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="Extra environment for Keel, e.g. MALLOC_ARENA_MAX=2 (repeatable).",
    )
    args = parser.parse_args()
    if any("=" not in item for item in args.keel_env):
        parser.error("--keel-env takes NAME=VALUE, e.g. --keel-env MALLOC_ARENA_MAX=2")
    env_extra = dict(item.split("=", 1) for item in args.keel_env)
    snapshot_at: tuple[float, ...] = ()
    if args.memtrace:
        args.memtrace.mkdir(parents=True, exist_ok=True)
        paths = [str(BENCH_DIR / "memtrace_site"), env_extra.get("PYTHONPATH", "")]
        env_extra |= {
            "PYTHONPATH": os.pathsep.join(p for p in paths if p),
            "KEEL_BENCH_MEMTRACE_DIR": str(args.memtrace.resolve()),
        }
        if args.memtrace_trim:
            env_extra["KEEL_BENCH_MEMTRACE_TRIM"] = "1"
        snapshot_at = tuple(float(t) for t in args.memtrace_at.split(",") if t.strip())
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.time()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="keel-soak-") as tmp,
            children(Path(tmp)) as running,
        ):
            stub_url = start_stub(running, 0.0)
            system = start_keel(
                running, Path(tmp), stub_url, "keel", tracing=True, limits=True,
                env_extra=env_extra or None,
            )  # fmt: skip
            idle = rss_bytes(system.pid)
            _progress(f"soaking {system.name} at {args.rate:g} req/s for {args.duration:g} s")
            counts = uvloop.run(soak(system, args.rate, args.duration, args.sample, snapshot_at))
            db = Path(tmp) / "keel" / "keel.db"
            db_mb = round(db.stat().st_size / 2**20, 1) if db.exists() else None
    except BenchError as exc:
        _progress(f"soak failed: {exc}")
        return 1
    except KeyboardInterrupt:
        _progress("interrupted; child processes stopped")
        return 130
    result = {
        "machine": machine(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "settings": {
            "duration_s": args.duration,
            "rate": args.rate,
            "sample_s": args.sample,
            "warmup_s": args.warmup,
            "system": system.description,
        },
        "achieved_rps": round(counts.ok / args.duration, 1),
        "trace_db_mb": db_mb,
        **summarise(counts, args.warmup, idle),
    }
    text = json.dumps(result, indent=2)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    print(text)
    _progress(
        f"RSS {result['rss_start_mb']} -> {result['rss_end_mb']} MB "
        f"({result['growth_pct']:+.2f} %), max {result['rss_max_mb']} MB"
    )
    return 0 if counts.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
