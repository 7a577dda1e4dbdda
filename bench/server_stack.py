"""Keel's app under several ASGI server stacks in turn, to choose one by measurement.

`python bench/server_stack.py` starts the stub once, then each stack in turn (uvicorn as
`keel serve` runs it, other uvicorn and granian configurations, several workers): Keel set
up as in bench/systems.py (app key with in-process limits, a route over two targets, tracing
to SQLite), driven by bench/load.py case by case, each case right after the same case direct
to the stub; then it checks answers and headers, a client that hangs up, and that no trace
is lost at stop. `--rounds N` repeats it all, every other round in reverse order;
`--interleave` starts all stacks first and runs each case on them back to back instead.
JSON on stdout, Markdown on stderr; ratios are against `uvicorn` (keel serve), same run.
Needs the servers it compares: `.venv/bin/pip install 'granian[uvloop]' rloop zttp`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import http.client
import json
import logging
import os
import signal
import socket
import sqlite3
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from compare import RssSampler
from load import LoadResult
from overhead import (
    BENCH_DIR,
    BENCH_LIMITS,
    MODES,
    BenchError,
    Children,
    Mode,
    Options,
    _drop_redis_prefix,
    _keel_executable,
    _progress,
    children,
    free_port,
    machine,
    measure,
    parse_cases,
    run_main,
    start_stub,
    wait_until_ready,
)
from systems import ROUTE, _call, configure_route, cpu_seconds

if TYPE_CHECKING:
    from fastapi import FastAPI

Server = Literal["keel serve", "uvicorn", "granian", "granian-embed"]
BASELINE = "uvicorn"
REDIS_URL = "redis://127.0.0.1:6379/0"
SLOW_ROUTE = "slow"  # a route to a stub that waits before answering, for the disconnect probe
SLOW_DELAY_MS = 1500.0
_DONE = b"data: [DONE]\n\n"
_SHUTDOWN_PROBES = 20
_APP = "server_stack:keel_app"  # the factory below, as uvicorn and granian import it


@dataclass(frozen=True, slots=True)
class Stack:
    """One way to serve Keel's app: which server, its flags, how many worker processes."""

    name: str
    server: Server
    about: str
    flags: tuple[str, ...] = ()
    workers: int = 1
    redis: bool = False  # limits and change events through Redis (needed across workers)
    seed: bool = True  # with workers: migrate and configure with one worker, then restart


_UVICORN = ("--loop", "uvloop", "--http", "httptools")
_GRANIAN = ("--loop", "uvloop")
# fmt: off
_STACKS = (
    Stack("uvicorn", "keel serve", "keel serve as shipped: uvicorn, uvloop + httptools"),
    Stack("uvicorn-cli", "uvicorn", "uvicorn CLI with the bench's app factory", _UVICORN),
    Stack("uvicorn-h11", "uvicorn", "uvicorn, uvloop + h11", ("--loop", "uvloop", "--http", "h11")),
    Stack("uvicorn-zttp", "uvicorn", "uvicorn, uvloop + zttp (pip install zttp)",
          ("--loop", "uvloop", "--http", "zttp")),
    Stack("granian", "granian", "granian asgi, uvloop", _GRANIAN),
    Stack("granian-rloop", "granian", "granian asgi, rloop", ("--loop", "rloop")),
    Stack("granian-asyncio", "granian", "granian asgi, asyncio loop", ("--loop", "asyncio")),
    Stack("granian-st", "granian", "granian asgi, uvloop, single-threaded runtime",
          (*_GRANIAN, "--runtime-mode", "st")),
    Stack("granian-http1", "granian", "granian asgi, uvloop, HTTP/1 only",
          (*_GRANIAN, "--http", "1")),
    Stack("granian-rust-tasks", "granian", "granian asgi, uvloop, Rust task implementation",
          (*_GRANIAN, "--task-impl", "rust")),
    Stack("granian-embed", "granian-embed", "granian's embedded server in Keel's uvloop"),
    Stack("uvicorn-2w", "uvicorn", "uvicorn, 2 workers, in-process limits", _UVICORN, 2),
    Stack("granian-2w", "granian", "granian asgi, uvloop, 2 workers, in-process limits",
          _GRANIAN, 2),
    Stack("uvicorn-redis", "keel serve", "keel serve, limits in Redis", redis=True),
    Stack("uvicorn-2w-redis", "uvicorn", "uvicorn, 2 workers, limits in Redis", _UVICORN, 2,
          redis=True),
    Stack("granian-redis", "granian", "granian asgi, uvloop, limits in Redis", _GRANIAN,
          redis=True),
    Stack("granian-2w-redis", "granian", "granian asgi, uvloop, 2 workers, limits in Redis",
          _GRANIAN, 2, redis=True),
    Stack("uvicorn-2w-fresh", "uvicorn", "uvicorn, 2 workers started on an empty data dir",
          _UVICORN, 2, seed=False),
    Stack("granian-2w-fresh", "granian", "granian, 2 workers started on an empty data dir",
          _GRANIAN, 2, seed=False),
)
# fmt: on
STACKS = {stack.name: stack for stack in _STACKS}
DEFAULT_STACKS = ("uvicorn", "uvicorn-h11", "granian", "granian-2w", "uvicorn-2w")


# -- the app, as the servers load it ---------------------------------------------------------


def keel_app() -> FastAPI:
    """Keel's ASGI app from KEEL_* settings, for `uvicorn/granian --factory server_stack:keel_app`.

    The same `create_app` that `keel serve` runs; the lifespan starts the services.
    """
    from keel.server.app import create_app
    from keel.settings import load_settings

    settings = load_settings().settings
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return create_app(settings)


def serve_embedded(port: int) -> None:
    """Serve `keel_app()` with granian's embedded server inside this process's uvloop."""
    import uvloop
    from granian.constants import Interfaces
    from granian.log import LogLevels
    from granian.server.embed import Server as Embedded

    async def run() -> None:
        app = keel_app()
        server = Embedded(app, port=port, interface=Interfaces.ASGI, log_level=LogLevels.warning)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, server.stop)
        await server.serve()

    uvloop.run(run())


# -- starting a stack -------------------------------------------------------------------------


@dataclass(slots=True)
class Started:
    """A running stack: where to send requests, with which key, the process tree, the files."""

    stack: Stack
    url: str  # base URL ending in /v1
    key: str
    pid: int
    data_dir: Path
    argv: list[str]


def _environment(data_dir: Path, config: Path, redis_prefix: str | None) -> dict[str, str]:
    # Only these variables configure this Keel, not the caller's KEEL_*.
    env = {key: value for key, value in os.environ.items() if not key.startswith("KEEL_")}
    env |= {
        "KEEL_CONFIG": str(config),
        "KEEL_DATA_DIR": str(data_dir),
        "KEEL_LOCAL_MODEL": "false",
        "KEEL_EMBEDDINGS": "false",
        "KEEL_LOG_LEVEL": "warning",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(BENCH_DIR), env.get("PYTHONPATH")])),
    }
    if redis_prefix:
        env |= {"KEEL_REDIS_URL": REDIS_URL, "KEEL_REDIS_PREFIX": redis_prefix}
    return env


def server_argv(stack: Stack, port: int, workers: int) -> list[str]:
    """The command line that serves the stack on 127.0.0.1:port."""
    quiet = ["--log-level", "warning"]
    if stack.server == "keel serve":
        keel = [str(_keel_executable()), "serve", "--no-local-model", "--no-embeddings"]
        return [*keel, "--port", str(port), *quiet]
    if stack.server == "granian-embed":
        code = "import sys, server_stack; server_stack.serve_embedded(int(sys.argv[1]))"
        return [sys.executable, "-c", code, str(port)]
    common = ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), *quiet]
    common += ["--no-access-log", "--factory"]
    if stack.server == "uvicorn":
        graceful = ["--lifespan", "on", "--timeout-graceful-shutdown", "5"]
        return [sys.executable, "-m", "uvicorn", _APP, *common, *graceful, *stack.flags]
    return [sys.executable, "-m", "granian", "--interface", "asgi", *common, *stack.flags, _APP]


def _launch(
    running: Children,
    name: str,
    stack: Stack,
    data_dir: Path,
    workers: int,
    redis_prefix: str | None,
) -> tuple[str, list[str]]:
    port = free_port()
    argv = server_argv(stack, port, workers)
    config = data_dir / "keel.yaml"
    if stack.server == "keel serve":
        argv += ["--data-dir", str(data_dir), "--config", str(config)]
    running.start(name, argv, _environment(data_dir, config, redis_prefix))
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(running, name, f"{url}/healthz", also=data_dir / "admin.key")
    return f"{url}/v1", argv


def configure(base_url: str, admin: str, stub_url: str, slow_url: str) -> str:
    """The two-target route of systems.py, a route to the slow stub; return a limited app key."""
    configure_route(base_url, admin, stub_url)
    call = functools.partial(_call, base_url, admin)
    call("PUT", "/api/providers/slow", {"kind": "openai_compat", "base_url": slow_url})
    call(
        "POST", "/api/models", {"name": "slow-model", "provider": "slow", "upstream_model": "stub"}
    )
    call("PUT", f"/api/routes/{SLOW_ROUTE}", {"targets": {"slow-model@1": 100}})
    created = call("POST", "/api/keys", {"name": "bench", "role": "app", "limits": BENCH_LIMITS})
    key: str = created["key"]
    return key


def start_stack(
    running: Children, data_dir: Path, stack: Stack, upstreams: tuple[str, str], prefix: str
) -> Started:
    data_dir.mkdir()
    (data_dir / "keel.yaml").write_text("tracing: true\n")
    redis_prefix = f"{prefix}{data_dir.name}:" if stack.redis else None
    if redis_prefix:
        running.cleanups.append(lambda: _drop_redis_prefix(redis_prefix))
    key = ""
    if stack.workers > 1 and stack.seed:
        # Workers started together on an empty data dir race each other through migrations
        # and the first admin key; a single worker sets the data dir up first.
        with children(data_dir) as seeding:
            url, _ = _launch(seeding, "seed", stack, data_dir, 1, redis_prefix)
            admin = (data_dir / "admin.key").read_text().strip()
            key = configure(url, admin, *upstreams)
    url, argv = _launch(running, stack.name, stack, data_dir, stack.workers, redis_prefix)
    admin = (data_dir / "admin.key").read_text().strip()
    if not key:
        key = configure(url, admin, *upstreams)
    return Started(stack, url, key, running.pid(stack.name), data_dir, argv)


# -- checks ------------------------------------------------------------------------------------


def _post(started: Started, body: dict[str, Any]) -> tuple[http.client.HTTPResponse, bytes]:
    port = int(started.url.rsplit(":", 1)[1].split("/", 1)[0])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {started.key}", "Content-Type": "application/json"}
    connection.request("POST", "/v1/chat/completions", json.dumps(body), headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response, data


def answer_check(started: Started) -> dict[str, Any]:
    """One answer of each kind: status, header names as sent on the wire, the SSE ending."""
    found: dict[str, Any] = {}
    for mode in MODES:
        body: dict[str, Any] = {"model": ROUTE, "messages": [{"role": "user", "content": "Hi"}]}
        if mode == "streaming":
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        response, data = _post(started, body)
        found[mode] = {
            "status": response.status,
            "http_version": response.version,
            "headers": [name for name, _ in response.getheaders()],
            "ok": response.status == 200
            and (data.endswith(_DONE) if mode == "streaming" else b'"choices"' in data),
        }
        if mode == "streaming":
            found[mode]["events"] = data.count(b"data: ")
            found[mode]["ends_with_done"] = data.endswith(_DONE)
    return found


def _trace_db(started: Started) -> contextlib.closing[sqlite3.Connection]:
    return contextlib.closing(sqlite3.connect(started.data_dir / "keel.db", timeout=10))


def trace_count(started: Started) -> int:
    with _trace_db(started) as db:
        count: int = db.execute("SELECT count(*) FROM traces").fetchone()[0]
    return count


def settled_trace_count(started: Started, quiet_s: float = 1.0, limit_s: float = 15.0) -> int:
    """The trace count once it has not moved for `quiet_s` (the writer has drained)."""
    deadline = time.monotonic() + limit_s
    last, since = trace_count(started), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = trace_count(started)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return last


def disconnect_check(started: Started) -> list[dict[str, Any]]:
    """Clients that hang up while Keel waits for a slow upstream, then what Keel recorded."""
    port = int(started.url.rsplit(":", 1)[1].split("/", 1)[0])
    for stream in (False, True):
        body = json.dumps(
            {"model": SLOW_ROUTE, "stream": stream, "messages": [{"role": "user", "content": "Hi"}]}
        ).encode()
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {started.key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(head + body)
            time.sleep(0.3)
    time.sleep(SLOW_DELAY_MS / 1000 + 2.0)
    with _trace_db(started) as db:
        rows = db.execute(
            "SELECT status, http_status, error_type, duration_ms FROM traces "
            "WHERE route = ? OR model = ? ORDER BY start_us",
            (SLOW_ROUTE, SLOW_ROUTE),
        ).fetchall()
    return [
        {"status": s, "http_status": h, "error_type": e, "duration_ms": round(d, 1)}
        for s, h, e, d in rows
    ]


def served_before_stop(started: Started) -> tuple[int, int]:
    """Send answers right before the stop; return (trace count before them, answers served)."""
    before = settled_trace_count(started)
    body = {"model": ROUTE, "messages": [{"role": "user", "content": "Hi"}]}
    served = sum(_post(started, body)[0].status == 200 for _ in range(_SHUTDOWN_PROBES))
    return before, served


def log_problems(log: Path) -> list[str]:
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return [line[:300] for line in lines if "Traceback" in line or " ERROR " in line][:5]


# -- measuring -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Case:
    round: int
    mode: Mode
    concurrency: int
    direct: LoadResult | None
    result: LoadResult | None
    cpu_ms_per_request: float | None = None
    failure: str | None = None


@dataclass(slots=True)
class StackRun:
    """One stack started, measured and stopped (once per round, or once when interleaved)."""

    stack: Stack
    round: int
    argv: list[str] = field(default_factory=list)
    cases: list[Case] = field(default_factory=list)
    idle_rss_mb: float | None = None
    peak_rss_mb: float | None = None
    checks: dict[str, Any] = field(default_factory=dict)
    failure: str | None = None


@dataclass(slots=True)
class Live:
    """A started stack with what watches it, until `finish` stops it."""

    run: StackRun
    started: Started
    running: Children
    sampler: RssSampler
    log_dir: Path


def _load(
    started: Started | None, stub_url: str, case: tuple[Mode, int], options: Options, name: str
) -> tuple[LoadResult | None, float | None, str | None]:
    mode, concurrency = case
    url, key = (started.url, started.key) if started else (stub_url, None)
    before = cpu_seconds(started.pid) if started else 0.0
    try:
        result = measure(url, concurrency, mode, options, key)
    except BenchError as exc:
        _progress(f"{name:18} {mode:13} c={concurrency:<3} FAILED: {str(exc)[-300:]}")
        return None, None, str(exc)[-500:]
    cpu = None
    if started and result.requests:
        # The load ran warm-up + duration; `requests` counts the measured part.
        served = result.requests * (options.warmup_s + options.duration_s) / options.duration_s
        cpu = round((cpu_seconds(started.pid) - before) * 1000 / served, 3)
    ttfb = f"  ttfb {result.ttfb_p50_ms:6.2f}" if result.ttfb_p50_ms else ""
    _progress(
        f"{name:18} {mode:13} c={concurrency:<3} {result.rps:7.1f} req/s  p50 {result.p50_ms:6.2f}"
        f"  p99 {result.p99_ms:7.2f}{ttfb}  cpu/req {cpu or 0:5.2f}  errors {result.errors}"
    )
    if result.error_sample:
        _progress(f"  first error: {result.error_sample}")
    return result, cpu, None


def begin(run: StackRun, tmp: Path, upstreams: tuple[str, str], prefix: str) -> Live | None:
    """Start the stack and its RSS sampler; None (and `run.failure`) if it does not start."""
    data_dir = tmp / f"{run.stack.name}-r{run.round}"
    log_dir = tmp / f"{data_dir.name}-logs"
    log_dir.mkdir()
    _progress(f"round {run.round + 1}: starting {run.stack.name} ({run.stack.about}) ...")
    running = Children(log_dir)
    try:
        started = start_stack(running, data_dir, run.stack, upstreams, prefix)
    except BenchError as exc:
        running.stop_all()
        last = (str(exc).strip().splitlines() or ["?"])[-1]
        run.failure = f"failed to start: {last[:300]}"
        _progress(f"skipping {run.stack.name}: {run.failure}")
        return None
    run.argv = started.argv
    sampler = RssSampler({run.stack.name: started.pid})
    sampler.start()
    return Live(run, started, running, sampler, log_dir)


def measure_case(
    live: Live, number: int, case: tuple[Mode, int], direct: LoadResult | None, options: Options
) -> None:
    result, cpu, failure = _load(live.started, "", case, options, live.run.stack.name)
    live.run.cases.append(Case(number, *case, direct, result, cpu, failure))


def finish(live: Live) -> None:
    """Check answers and a client that hangs up (first round), then stop and count traces."""
    run, started = live.run, live.started
    try:
        if run.round == 0:
            run.checks["answers"] = answer_check(started)
            run.checks["disconnects"] = disconnect_check(started)
        before, served = served_before_stop(started)
    finally:
        live.sampler.stop()
        stopping = time.monotonic()
        live.running.stop_all()  # SIGTERM: the lifespan flushes queued traces
    memory = live.sampler.memory[run.stack.name]
    run.idle_rss_mb = round(memory.idle_bytes / 2**20, 1)
    run.peak_rss_mb = round(memory.peak_bytes / 2**20, 1)
    run.checks["stop"] = {
        "served_right_before_stop": served,
        "lost": served - (trace_count(started) - before),
        "stop_s": round(time.monotonic() - stopping, 2),
        "spill_files": len(list((started.data_dir / "spill").glob("*.jsonl"))),
    }
    run.checks["log_problems"] = log_problems(live.log_dir / f"{run.stack.name}.log")


def _cases(options: Options) -> list[tuple[Mode, int]]:
    return [(mode, c) for c in options.concurrency for mode in options.modes]


def in_turn(
    stacks: list[Stack], options: Options, rounds: int, tmp: Path, upstreams: tuple[str, str]
) -> list[StackRun]:
    """Each stack alone: start, every case (each right after the same case direct), stop."""
    prefix = f"keel-bench-stack-{os.getpid()}:"
    runs: list[StackRun] = []
    for number in range(rounds):
        # ABBA order: a drift in the machine's load during the run hits every stack alike.
        for stack in stacks if number % 2 == 0 else stacks[::-1]:
            runs.append(run := StackRun(stack, number))
            live = begin(run, tmp, upstreams, prefix)
            if live is None:
                continue
            try:
                for case in _cases(options):
                    direct, _, _ = _load(None, upstreams[0], case, options, "direct")
                    measure_case(live, number, case, direct, options)
            except BaseException:
                _abandon([live])
                raise
            finish(live)
    return runs


def _abandon(lives: list[Live]) -> None:
    for live in lives:
        live.sampler.stop()
        live.running.stop_all()


def interleaved(
    stacks: list[Stack], options: Options, rounds: int, tmp: Path, upstreams: tuple[str, str]
) -> list[StackRun]:
    """All stacks up at once; each case runs direct, then every stack in a rotating order."""
    prefix = f"keel-bench-stack-{os.getpid()}:"
    runs = [StackRun(stack, 0) for stack in stacks]
    lives: list[Live] = []
    try:
        for run in runs:
            if (live := begin(run, tmp, upstreams, prefix)) is not None:
                lives.append(live)
        for number in range(rounds):
            for index, case in enumerate(_cases(options)):
                direct, _, _ = _load(None, upstreams[0], case, options, "direct")
                shift = (number + index) % len(lives) if lives else 0
                for live in lives[shift:] + lives[:shift]:
                    measure_case(live, number, case, direct, options)
    except BaseException:
        _abandon(lives)
        raise
    for live in lives:
        finish(live)
    return runs


# -- deriving ------------------------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return round(a / b, 2)


def _median(values: list[float]) -> float | None:
    ordered = sorted(values)
    if not ordered:
        return None
    middle = len(ordered) // 2
    found = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return round(found, 3)


def round_rows(runs: list[StackRun]) -> list[dict[str, Any]]:
    """One row per stack, round and case: what it measured and what it adds over direct."""
    found: list[dict[str, Any]] = []
    for run in runs:
        for case in run.cases:
            row: dict[str, Any] = {
                "stack": run.stack.name,
                "round": case.round,
                "mode": case.mode,
                "concurrency": case.concurrency,
            }
            r, d = case.result, case.direct
            if r is None or d is None:
                found.append(row | {"failure": case.failure or "no direct baseline"})
                continue
            found.append(
                row
                | {
                    "rps": r.rps,
                    "requests": r.requests,
                    "errors": r.errors,
                    "p50_ms": r.p50_ms,
                    "p99_ms": r.p99_ms,
                    "ttfb_p50_ms": r.ttfb_p50_ms,
                    "added_p50_ms": round(r.p50_ms - d.p50_ms, 3),
                    "added_p99_ms": round(r.p99_ms - d.p99_ms, 3),
                    "added_ttfb_p50_ms": round(r.ttfb_p50_ms - d.ttfb_p50_ms, 3)
                    if r.ttfb_p50_ms is not None and d.ttfb_p50_ms is not None
                    else None,
                    "direct_rps": d.rps,
                    "cpu_ms_per_request": case.cpu_ms_per_request,
                }
            )
    return found


_MEDIANS = (
    "rps",
    "p50_ms",
    "p99_ms",
    "ttfb_p50_ms",
    "added_p50_ms",
    "added_p99_ms",
    "added_ttfb_p50_ms",
    "direct_rps",
    "cpu_ms_per_request",
)


def medians(per_round: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per stack and case, the median over rounds, and its ratios to uvicorn's medians."""
    keys = dict.fromkeys((r["stack"], r["mode"], r["concurrency"]) for r in per_round)
    found: list[dict[str, Any]] = []
    for stack, mode, concurrency in keys:
        mine = [
            r
            for r in per_round
            if (r["stack"], r["mode"], r["concurrency"]) == (stack, mode, concurrency)
            and "rps" in r
        ]
        row: dict[str, Any] = {
            "stack": stack,
            "mode": mode,
            "concurrency": concurrency,
            "rounds": len(mine),
        }
        if mine:
            sent = sum(r["requests"] + r["errors"] for r in mine)
            row["errors"] = sum(r["errors"] for r in mine)
            row["error_rate"] = round(row["errors"] / sent, 4) if sent else None
            for name in _MEDIANS:
                row[name] = _median([r[name] for r in mine if r[name] is not None])
        found.append(row)
    base = {(r["mode"], r["concurrency"]): r for r in found if r["stack"] == BASELINE}
    for row in found:
        b = base.get((row["mode"], row["concurrency"]))
        if b is None or not row["rounds"] or not b["rounds"]:
            continue
        row["vs_uvicorn"] = {
            "rps": _ratio(row["rps"], b["rps"]),
            "cpu_per_request": _ratio(row["cpu_ms_per_request"], b["cpu_ms_per_request"]),
            "added_p50": _ratio(row["added_p50_ms"], b["added_p50_ms"]),
            "added_p99": _ratio(row["added_p99_ms"], b["added_p99_ms"]),
            "added_ttfb_p50": _ratio(row["added_ttfb_p50_ms"], b["added_ttfb_p50_ms"]),
        }
        # Round by round (with --interleave, measured minutes apart at most): the spread.
        pairs = _round_pairs(per_round, row)
        row["vs_uvicorn"]["cpu_per_request_by_round"] = [
            _ratio(r["cpu_ms_per_request"], b["cpu_ms_per_request"]) for r, b in pairs
        ]
        row["vs_uvicorn"]["rps_by_round"] = [_ratio(r["rps"], b["rps"]) for r, b in pairs]
    return found


def _round_pairs(
    per_round: list[dict[str, Any]], row: dict[str, Any]
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    def key(r: dict[str, Any]) -> tuple[str, int, int]:
        return (r["mode"], r["concurrency"], r["round"])

    base = {key(r): r for r in per_round if r["stack"] == BASELINE and "rps" in r}
    mine = [r for r in per_round if r["stack"] == row["stack"] and "rps" in r]
    return [
        (r, base[key(r)])
        for r in mine
        if (r["mode"], r["concurrency"]) == (row["mode"], row["concurrency"]) and key(r) in base
    ]


def summary(runs: list[StackRun]) -> dict[str, Any]:
    """Per stack: the command, memory over rounds, and what the checks found."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(run.stack.name for run in runs):
        mine = [run for run in runs if run.stack.name == name]
        first = mine[0]
        ran = [run for run in mine if run.failure is None]
        out[name] = {
            "about": first.stack.about,
            "workers": first.stack.workers,
            "command": next((run.argv for run in ran), []),
            "failures": [run.failure for run in mine if run.failure],
            "idle_rss_mb": _median([run.idle_rss_mb for run in ran if run.idle_rss_mb]),
            "peak_rss_mb": max((run.peak_rss_mb or 0.0 for run in ran), default=None),
            "checks": first.checks,
            "lost_at_stop": [run.checks.get("stop", {}).get("lost") for run in ran],
            "log_problems": sum(len(run.checks.get("log_problems", [])) for run in ran),
        }
    base = out.get(BASELINE, {})
    for entry in out.values():
        entry["peak_rss_vs_uvicorn"] = _ratio(entry["peak_rss_mb"], base.get("peak_rss_mb"))
    return out


# -- reporting -----------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "—" if value is None else format(value, spec)


def _answers(checks: dict[str, Any]) -> str:
    answers = checks.get("answers") or {}
    plain, stream = answers.get("non-streaming") or {}, answers.get("streaming") or {}
    if not answers:
        return "not checked"
    ok = "ok" if plain.get("ok") and stream.get("ends_with_done") else "FAILED"
    return f"{ok}, HTTP/1.{plain.get('http_version', 0) % 10}, header names: " + " ".join(
        plain.get("headers", [])
    )


def markdown(table: list[dict[str, Any]], summed: dict[str, Any]) -> str:
    lines = [
        "| stack | mode | c | rounds | req/s | p50 | p99 | added p50 | TTFB p50 | added TTFB "
        "| CPU ms/req | errors | req/s ÷ uvicorn | CPU/req ÷ uvicorn | added p50 ÷ uvicorn "
        "| added TTFB ÷ uvicorn |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in table:
        if not r["rounds"]:
            lines.append(
                f"| {r['stack']} | {r['mode']} | {r['concurrency']} | 0 | failed |" + " |" * 11
            )
            continue
        vs = r.get("vs_uvicorn") or {}
        lines.append(
            f"| {r['stack']} | {r['mode']} | {r['concurrency']} | {r['rounds']} | {r['rps']:.0f} "
            f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['added_p50_ms']:+.2f} "
            f"| {_fmt(r['ttfb_p50_ms'])} | {_fmt(r['added_ttfb_p50_ms'], '+.2f')} "
            f"| {_fmt(r['cpu_ms_per_request'])} | {r['errors']} | {_fmt(vs.get('rps'))} "
            f"| {_fmt(vs.get('cpu_per_request'))} | {_fmt(vs.get('added_p50'))} "
            f"| {_fmt(vs.get('added_ttfb_p50'))} |"
        )
    lines += [
        "",
        "| stack | workers | idle RSS MB | peak RSS MB | peak RSS ÷ uvicorn | traces lost at stop "
        "| client gone while waiting (status, HTTP, ms) | log errors | answers |",
        "|---|--:|--:|--:|--:|---|---|--:|---|",
    ]
    for name, s in summed.items():
        disconnects = "; ".join(
            f"{d['status']} {d['http_status']} {d['duration_ms']:.0f}"
            for d in s["checks"].get("disconnects", [])
        )
        failures = f" (failed: {'; '.join(s['failures'])})" if s["failures"] else ""
        lines.append(
            f"| {name}{failures} | {s['workers']} | {_fmt(s['idle_rss_mb'], '.0f')} "
            f"| {_fmt(s['peak_rss_mb'], '.0f')} | {_fmt(s['peak_rss_vs_uvicorn'])} "
            f"| {s['lost_at_stop']} | {disconnects or '—'} | {s['log_problems']} "
            f"| {_answers(s['checks'])} |"
        )
    lines.append(
        "\nMedians over rounds; latencies in ms; added = stack minus direct-to-stub measured "
        "right before it. ÷ uvicorn: the stack's median over keel serve's in the same run. RSS "
        "sums the process tree (pages shared between processes count twice)."
    )
    return "\n".join(lines) + "\n"


# -- entry point ---------------------------------------------------------------------------------


def _parse_args() -> tuple[list[Stack], Options, int, bool]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--stacks",
        default=",".join(DEFAULT_STACKS),
        help=f"Comma-separated, in order, from {', '.join(STACKS)}.",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="Start and measure every stack this often, the order reversed every other round.",
    )
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="Start every stack first, then run each case on all of them back to back, in an "
        "order that rotates; --rounds repeats the cases. Steadier ratios on a shared machine.",
    )
    parser.add_argument("--concurrency", default="1,32", help="Comma-separated workers.")
    parser.add_argument("--modes", default=",".join(MODES), help="non-streaming, streaming.")
    parser.add_argument("--duration", type=float, default=10.0, help="Measured s per run.")
    parser.add_argument("--warmup", type=float, default=1.0, help="Unmeasured s per run.")
    parser.add_argument("--json-out", type=Path, default=None, help="Also write the JSON here.")
    args = parser.parse_args()
    names = [s.strip() for s in args.stacks.split(",") if s.strip()]
    unknown = [n for n in names if n not in STACKS]
    if unknown:
        parser.error(f"unknown stack(s) {', '.join(unknown)}; known: {', '.join(STACKS)}")
    concurrency, modes = parse_cases(parser, args.concurrency, args.modes)
    if args.rounds < 1:
        parser.error("--rounds takes a number >= 1")
    options = Options(args.duration, args.warmup, concurrency, modes, 0.0, args.json_out)
    return [STACKS[n] for n in names], options, args.rounds, args.interleave


def bench(stacks: list[Stack], options: Options, rounds: int, interleave: bool) -> dict[str, Any]:
    started_at = time.time()
    with tempfile.TemporaryDirectory(prefix="keel-stack-") as tmp, children(Path(tmp)) as stubs:
        _progress("starting stubs ...")
        stub_url = start_stub(stubs, 0.0)
        slow_port = free_port()
        slow = [sys.executable, str(BENCH_DIR / "stub.py"), "--port", str(slow_port)]
        stubs.start("slow-stub", [*slow, "--delay-ms", str(SLOW_DELAY_MS)])
        slow_url = f"http://127.0.0.1:{slow_port}/v1"
        wait_until_ready(stubs, "slow-stub", f"{slow_url}/models")
        order = interleaved if interleave else in_turn
        runs = order(stacks, options, rounds, Path(tmp), (stub_url, slow_url))
    per_round = round_rows(runs)
    table = medians(per_round)
    summed = summary(runs)
    _progress("\n" + markdown(table, summed))
    # Options' tracing and limits fields belong to overhead.py: here every stack traces and
    # its key has in-process limits (Redis ones for the *-redis stacks).
    settings = {k: v for k, v in asdict(options).items() if k not in ("tracing", "limits")}
    settings["json_out"] = str(options.json_out) if options.json_out else None
    return {
        "machine": machine(),
        "settings": settings
        | {"stacks": [s.name for s in stacks], "rounds": rounds, "interleave": interleave},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_at)),
        "wall_s": round(time.time() - started_at, 1),
        "versions": _versions(),
        "results": table,
        "per_round": per_round,
        "stacks": summed,
    }


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for name in ("uvicorn", "httptools", "h11", "zttp", "uvloop", "granian", "rloop", "starlette"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def main() -> int:
    stacks, options, rounds, interleave = _parse_args()
    result = run_main(lambda: bench(stacks, options, rounds, interleave), options.json_out)
    return 0 if result is not None else 1


if __name__ == "__main__":
    sys.exit(main())
