"""Fault suite: the hardening probes, repeated with counts against a real Keel on 127.0.0.1.

`python bench/faults.py` (about 3 minutes; `--quick` about 1) starts two stub upstreams
and two `keel serve` processes, runs every probe and prints JSON: per probe its counts and
a verdict (pass, fail, or skipped with the reason). Exit 1 when a probe fails.

- "main" Keel: SQLite in its data dir; body and header deadlines of 2 s.
- "scale-out" Keel: PostgreSQL and Redis when they answer on 127.0.0.1, each reached
  through a TCP proxy that the suite cuts to make an outage for this Keel alone (the
  servers keep running for everyone else on the machine); SQLite when PostgreSQL is absent.

Probes: bad_input, tenancy, secrets_at_rest, slow_upload_flood, nul_in_trace, store_outage,
redis_outage, upstream_kill, file_modes, soak. `--only a,b` runs some. Traffic goes to
127.0.0.1 only; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import socket
import stat
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import orjson
import uvloop
from sqlalchemy import create_engine, inspect, text

from no_loss import metrics as trace_counters
from no_loss import stored_ids, wait_for_traces
from overhead import (
    BENCH_DIR,
    BenchError,
    Children,
    _drop_redis_prefix,
    _progress,
    children,
    free_port,
    machine,
    run_main,
    wait_until_ready,
)
from soak import soak as soak_load
from soak import summarise as soak_summary
from systems import ROUTE, System, rss_bytes, start_keel
from tcp_proxy import TcpProxy

POSTGRES_ADMIN_URL = os.environ.get(
    "KEEL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
DEADLINE_S = 2  # the main Keel's request_body_timeout and request_header_timeout
MESSAGES = [{"role": "user", "content": "Say hi"}]
PROBES = (
    "bad_input",
    "tenancy",
    "secrets_at_rest",
    "slow_upload_flood",
    "nul_in_trace",
    "store_outage",
    "redis_outage",
    "upstream_kill",
    "file_modes",
    "soak",
)
Verdict = Literal["pass", "fail", "skipped"]


@dataclass(frozen=True, slots=True)
class Profile:
    """How much of each probe to run: the full suite, or `--quick`."""

    repeats: int  # each bad input, this many times
    uploads: int  # stalled uploads in the flood
    stalled_headers: int
    load_s: float  # store outage and Redis outage: seconds of load around the cut
    cut_s: float  # seconds the proxy stays cut
    kill_load_s: float
    soak_s: float
    soak_rate: float
    settle_s: float  # seconds to wait for traces to reach the store


FULL = Profile(
    repeats=20,
    uploads=300,
    stalled_headers=60,
    load_s=24,
    cut_s=8,
    kill_load_s=12,
    soak_s=90,
    soak_rate=50,
    settle_s=60,
)
QUICK = Profile(
    repeats=3,
    uploads=300,
    stalled_headers=30,
    load_s=9,
    cut_s=3,
    kill_load_s=5,
    soak_s=20,
    soak_rate=40,
    settle_s=30,
)


@dataclass(slots=True)
class Result:
    verdict: Verdict
    counts: dict[str, Any] = field(default_factory=dict)
    note: str = ""


# -- plumbing ----------------------------------------------------------------------------


@dataclass(slots=True)
class Keel:
    system: System
    data_dir: Path
    admin: str
    database_url: str  # how the suite reads the store directly (never through the proxy)
    store: str  # "sqlite" or "postgresql"
    stubs: dict[str, str]  # "a", "b" → base URL of the stub upstreams
    db_proxy: TcpProxy | None = None
    redis_proxy: TcpProxy | None = None
    spill_seen: dict[str, Any] = field(default_factory=dict)  # spill files during an outage

    @property
    def origin(self) -> str:
        return self.system.url.removesuffix("/v1")


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    key: str | None,
    body: Any = None,
    raw: bytes | None = None,
) -> tuple[int, Any, dict[str, str]]:
    """One request; (status, parsed JSON or text, headers)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
    if data is not None:
        headers["Content-Type"] = "application/json"
    async with session.request(method, url, data=data, headers=headers) as response:
        payload = await response.read()
        try:
            parsed: Any = orjson.loads(payload)
        except orjson.JSONDecodeError:
            parsed = payload.decode(errors="replace")
        return response.status, parsed, dict(response.headers)


async def admin_call(keel: Keel, method: str, path: str, body: Any = None, key: str = "") -> Any:
    """An admin API call that must succeed (the probe cannot run otherwise)."""
    async with aiohttp.ClientSession() as session:
        status, parsed, _ = await call(session, method, keel.origin + path, key or keel.admin, body)
    if status >= 400:
        raise BenchError(f"{method} {path} failed during setup: HTTP {status} {parsed}")
    return parsed


def chat_body(model: str = ROUTE, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES, "max_tokens": 16, **extra}


async def route_over(keel: Keel, route: str, arms: dict[str, str]) -> None:
    """Route `route` split evenly over one model version per upstream in `arms` (provider
    name → base URL); the versions are `<route>-model@1`, `@2`, …"""
    for provider, url in arms.items():
        await admin_call(
            keel, "PUT", f"/api/providers/{provider}", {"kind": "openai_compat", "base_url": url}
        )
        await admin_call(
            keel,
            "POST",
            "/api/models",
            {"name": f"{route}-model", "provider": provider, "upstream_model": "stub"},
        )
    weights = {f"{route}-model@{n}": 100 // len(arms) for n in range(1, len(arms) + 1)}
    await admin_call(keel, "PUT", f"/api/routes/{route}", {"targets": weights})
    # The router learns of the route from a change event, a moment after the PUT answered:
    # wait until it serves it, so the probe's first requests are not 404s of the setup.
    deadline = time.monotonic() + 15
    while route not in [m["id"] for m in (await admin_call(keel, "GET", "/v1/models"))["data"]]:
        if time.monotonic() > deadline:
            raise BenchError(f"route {route} not in /v1/models 15 s after it was created")
        await asyncio.sleep(0.05)


async def closed_loop(
    url: str,
    key: str,
    workers: int,
    duration_s: float,
    body: Callable[[int], dict[str, Any]],
    during: Callable[[], Awaitable[None]] | None = None,
) -> list[tuple[float, int, dict[str, str], bytes]]:
    """`workers` clients, each sending its next request when the last one returned, for
    `duration_s`; `during` runs alongside. Returns (time sent, status, headers, body)."""
    results: list[tuple[float, int, dict[str, str], bytes]] = []
    stop = time.monotonic() + duration_s
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:

        async def worker(index: int) -> None:
            sent = 0
            while time.monotonic() < stop:
                at = time.monotonic()
                payload = orjson.dumps(body(index * 1_000_000 + sent))
                sent += 1
                try:
                    async with session.post(f"{url}/chat/completions", data=payload) as response:
                        data = await response.read()
                        headers_ = {k.lower(): v for k, v in response.headers.items()}
                        results.append((at, response.status, headers_, data))
                except (aiohttp.ClientError, TimeoutError) as exc:
                    results.append((at, 0, {}, type(exc).__name__.encode()))

        side = asyncio.create_task(during()) if during else None
        await asyncio.gather(*(worker(n) for n in range(workers)))
        if side is not None:
            await side
    return results


def statuses(results: list[tuple[float, int, dict[str, str], bytes]]) -> dict[str, int]:
    return {str(code): n for code, n in sorted(Counter(r[1] for r in results).items())}


def trace_ids(results: list[tuple[float, int, dict[str, str], bytes]]) -> set[str]:
    return {r[2]["x-keel-trace-id"] for r in results if "x-keel-trace-id" in r[2]}


def loose_modes(root: Path, skip: tuple[str, ...] = ()) -> tuple[int, dict[str, str]]:
    """(entries looked at, those group or others may use, with their mode)."""
    seen, loose = 0, {}
    for path in [root, *root.rglob("*")]:
        name = str(path.relative_to(root))
        if name in skip:
            continue
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            continue  # a spill file replayed and removed meanwhile
        seen += 1
        if mode & 0o077:
            loose[name or "."] = oct(mode)
    return seen, loose


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# -- probes ------------------------------------------------------------------------------


def bad_inputs() -> list[tuple[str, str, str, bytes]]:
    """(case, method, path, body): each must get a 4xx, never a 5xx nor a success."""
    deep = b"[" * 100_000 + b"]" * 100_000
    chat, j = "/v1/chat/completions", orjson.dumps
    # fmt: off
    return [
        ("malformed JSON", "POST", chat, b'{"model": '),
        ("body is not an object", "POST", chat, b"[1, 2]"),
        ("empty body", "POST", chat, b""),
        ("JSON 100,000 levels deep", "POST", chat, deep),
        ("invalid UTF-8", "POST", chat, b'{"model": "stub\xff", "messages": []}'),
        ("messages as a string", "POST", chat, j({"model": ROUTE, "messages": "hi"})),
        ("unknown role", "POST", chat, j(chat_body(messages=[{"role": "robot", "content": "x"}]))),
        ("temperature as text", "POST", chat, j(chat_body(temperature="hot"))),
        ("negative max_tokens", "POST", chat, j(chat_body(max_tokens=-1))),
        ("unknown model with a NUL", "POST", chat, j(chat_body(model="st\x00ub"))),
        ("body over max_body_bytes", "POST", chat, b" " * (8 * 1024 * 1024 + 1)),
        ("embeddings of token ids", "POST", "/v1/embeddings", j({"model": ROUTE, "input": [1]})),
        ("route body 100,000 levels deep", "PUT", "/api/routes/faults-bad", deep),
        ("provider body not UTF-8", "PUT", "/api/providers/faults-bad",
         b'{"kind": "openai_compat", "base_url": "http://h\xff/v1"}'),
        ("provider base_url with a NUL", "PUT", "/api/providers/faults-bad",
         j({"kind": "openai_compat", "base_url": "http://h\x00/v1"})),
        ("provider of an unknown kind", "PUT", "/api/providers/faults-bad", j({"kind": "nope"})),
        ("key name with a NUL", "POST", "/api/keys", j({"name": "a\x00b", "role": "app"})),
        ("key with an unknown role", "POST", "/api/keys", j({"name": "x", "role": "god"})),
        ("key with a negative rpm", "POST", "/api/keys", j({"name": "x", "limits": {"rpm": -1}})),
        ("route to an unknown version", "PUT", "/api/routes/faults-bad",
         j({"targets": {"nope@1": 100}})),
        ("split weights as text", "POST", "/api/routes/faults-bad/split",
         j({"targets": {"a@1": "x"}})),
        ("project named ../etc", "POST", "/api/projects", j({"name": "../etc"})),
        ("route name with a NUL in the path", "GET", "/api/routes/a%00b", b""),
        ("trace filter that is no time", "GET", "/api/traces?since=yesterday-ish", b""),
        ("feedback without a name", "POST", "/v1/feedback", j({"trace_id": "0" * 32, "value": 1})),
    ]
    # fmt: on


async def probe_bad_input(keel: Keel, profile: Profile) -> Result:
    cases = bad_inputs()
    per_case: dict[str, dict[str, int]] = {}
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for case, method, path, body in cases:
            found: Counter[str] = Counter()
            for _ in range(profile.repeats):
                raw = body if method != "GET" else None
                try:
                    status, _, _ = await call(
                        session, method, keel.origin + path, keel.admin, raw=raw
                    )
                    found[str(status)] += 1
                except aiohttp.ClientError as exc:
                    found[type(exc).__name__] += 1
            per_case[case] = dict(found)
    not_4xx = {c: s for c, s in per_case.items() if any(not k.startswith("4") for k in s)}
    server_errors = sum(n for s in per_case.values() for k, n in s.items() if k.startswith("5"))
    counts = {
        "cases": len(cases),
        "requests": len(cases) * profile.repeats,
        "server_errors": server_errors,
        "not_4xx": not_4xx,
        "statuses": per_case,
    }
    return Result("pass" if not not_4xx else "fail", counts)


async def probe_tenancy(keel: Keel) -> Result:
    # Project A (default) gets a provider, model, route and traces with distinctive names;
    # project B's admin then reads everything it may and looks for them.
    await route_over(keel, "faults-a-route", {"faults-a-provider": keel.stubs["b"]})
    results = await closed_loop(
        keel.system.url, keel.admin, 2, 1.0, lambda _: chat_body(model="faults-a-route")
    )
    a_traces = trace_ids(results)
    await wait_for_traces(keel.database_url, a_traces, 30)
    await admin_call(keel, "POST", "/api/projects", {"name": "faults-b"})
    created = await admin_call(
        keel, "POST", "/api/keys?project=faults-b", {"name": "b-admin", "role": "admin"}
    )
    b_key = created["key"]
    # A key of A's own (the admin key that created B's appears in B's audit as its actor).
    a_key = await admin_call(keel, "POST", "/api/keys", {"name": "faults-a-key", "role": "app"})
    a_key_id = a_key["data"]["id"]
    names = ["faults-a-provider", "faults-a-route", "faults-a-key", a_key_id]
    markers = [*names, *a_traces]
    reads = [
        "/api/traces",
        "/api/routes",
        "/api/routes/faults-a-route",
        "/api/providers",
        "/api/providers/faults-a-provider",
        "/api/models",
        "/v1/models",
        "/api/stats?by=route&since=1h",
        "/api/audit",
        "/api/keys",
        "/api/projects",
        *(f"/api/traces/{t}" for t in sorted(a_traces)[:5]),
    ]
    leaks, by_status = [], Counter()
    async with aiohttp.ClientSession() as session:
        for path in reads:
            status, body, _ = await call(session, "GET", keel.origin + path, b_key)
            by_status[str(status)] += 1
            shown = orjson.dumps(body).decode() if status < 400 else ""
            if any(marker in shown for marker in markers):
                leaks.append(path)
        status, body, _ = await call(session, "GET", keel.origin + "/metrics", b_key)
        metrics_status = status
        if status != 403:
            leaks.append(f"/metrics answered {status}")
    counts = {
        "project_a_traces": len(a_traces),
        "reads_as_project_b": len(reads) + 1,
        "statuses": dict(by_status),
        "metrics_status": metrics_status,
        "leaks": leaks,
    }
    ok = not leaks and len(a_traces) > 0
    return Result("pass" if ok else "fail", counts)


async def probe_secrets_at_rest(keels: list[Keel]) -> Result:
    secret = f"sk-faults-{secrets.token_hex(16)}"
    counts: dict[str, Any] = {}
    found: list[str] = []
    for keel in keels:
        name = f"faults-secret-{keel.store}"
        await admin_call(
            keel,
            "PUT",
            f"/api/providers/{name}",
            {"kind": "openai_compat", "base_url": keel.stubs["b"], "api_key": secret},
        )
        shown = await admin_call(keel, "GET", f"/api/providers/{name}")
        if secret in orjson.dumps(shown).decode():
            found.append(f"{keel.store}: GET /api/providers/{name}")
        files = [p for p in keel.data_dir.rglob("*") if p.is_file()]
        scanned = 0
        for path in files:
            data = path.read_bytes()
            scanned += len(data)
            if secret.encode() in data:
                found.append(f"{keel.store}: {path.relative_to(keel.data_dir)}")
        rows = 0
        if keel.store == "postgresql":  # the store is not a file here: read every table
            engine = create_engine(keel.database_url)
            try:
                with engine.connect() as connection:
                    for table in inspect(engine).get_table_names():
                        query = text(f'SELECT t::text FROM "{table}" t')
                        for (row,) in connection.execute(query):
                            rows += 1
                            if secret in row:
                                found.append(f"postgresql table {table}")
            finally:
                engine.dispose()
        counts[keel.store] = {"files": len(files), "bytes_scanned": scanned, "rows_scanned": rows}
    counts["found_in_plain_text"] = found
    return Result("pass" if not found else "fail", counts)


def stalled_upload(path: str, key: str, kind: int) -> bytes:
    """Headers of an upload and a few bytes of its body; the rest never comes."""
    chunked = kind == 2
    framing = b"Transfer-Encoding: chunked\r\n" if chunked else b"Content-Length: 1000\r\n"
    body = b'a\r\n{"model": \r\n' if chunked else b'{"model": '
    return (
        (
            f"{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\n"
        ).encode()
        + framing
        + b"\r\n"
        + body
    )


async def stall(port: int, head: bytes, wait_s: float) -> tuple[bytes, float | None]:
    """Send `head`, then nothing; (what came back, seconds until closed, or None if not)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        writer.write(head)
        await writer.drain()
        async with asyncio.timeout(wait_s):
            answer = await reader.read()
        return answer, time.monotonic() - started
    except ConnectionResetError:
        return b"(reset)", time.monotonic() - started
    except TimeoutError:
        return b"", None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def probe_slow_upload_flood(keel: Keel, profile: Profile) -> Result:
    port = int(keel.origin.rsplit(":", 1)[1])
    pid = keel.system.pid
    baseline = open_fds(pid)
    paths = [
        "POST /v1/chat/completions",
        "PUT /api/routes/faults-slow",
        "POST /v1/chat/completions",
    ]
    wait_s = DEADLINE_S + 30
    flood = [
        stall(port, stalled_upload(paths[n % 3], keel.admin, n % 3), wait_s)
        for n in range(profile.uploads)
    ]
    headers = [
        stall(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " if n % 2 else b"", wait_s)
        for n in range(profile.stalled_headers)
    ]
    tasks = [asyncio.create_task(c) for c in (*flood, *headers)]
    await asyncio.sleep(DEADLINE_S / 2)  # all connected and waiting: count Keel's descriptors
    peak = open_fds(pid)
    done = await asyncio.gather(*tasks)
    uploads, stalled = done[: profile.uploads], done[profile.uploads :]
    async with aiohttp.ClientSession() as session:
        healthz, _, _ = await call(session, "GET", keel.origin + "/healthz", None)
    deadline = time.monotonic() + 10
    while open_fds(pid) > baseline + 5 and time.monotonic() < deadline:  # noqa: ASYNC110 - /proc
        await asyncio.sleep(0.1)
    after = open_fds(pid)
    closed = [t for _, t in done if t is not None]
    got_408 = sum(answer.startswith(b"HTTP/1.1 408 ") for answer, _ in uploads)
    counts = {
        "stalled_uploads": profile.uploads,
        "stalled_header_reads": profile.stalled_headers,
        "deadline_s": DEADLINE_S,
        "closed": len(closed),
        "uploads_answered_408": got_408,
        "header_reads_closed_unanswered": sum(
            a in (b"", b"(reset)") and t is not None for a, t in stalled
        ),
        "slowest_close_s": round(max(closed), 2) if closed else None,
        "keel_fds_before": baseline,
        "keel_fds_during": peak,
        "keel_fds_after": after,
        "healthz_after": healthz,
    }
    ok = (
        len(closed) == len(done)
        and got_408 == profile.uploads
        and healthz == 200
        and after <= baseline + 5
    )
    return Result("pass" if ok else "fail", counts)


async def probe_nul_in_trace(keel: Keel, profile: Profile) -> Result:
    nul = [
        chat_body(user="u\x00ser", messages=[{"role": "user", "content": "a\x00b"}]),
        chat_body(model="st\x00ub"),
    ]
    nul_results = await closed_loop(keel.system.url, keel.admin, 2, 1.0, lambda n: nul[n % 2])
    after = await closed_loop(keel.system.url, keel.admin, 4, 2.0, lambda _: chat_body())
    nul_ids, after_ids = trace_ids(nul_results), trace_ids(after)
    await wait_for_traces(keel.database_url, nul_ids | after_ids, profile.settle_s)
    stored = await asyncio.to_thread(stored_ids, keel.database_url)
    counters = await trace_counters(keel.system)
    counts = {
        "store": keel.store,
        "nul_requests": statuses(nul_results),
        "later_requests": statuses(after),
        "nul_traces_stored": f"{len(nul_ids & stored)} of {len(nul_ids)}",
        "later_traces_stored": f"{len(after_ids & stored)} of {len(after_ids)}",
        "trace_counters": counters,
    }
    five = sum(1 for r in nul_results + after if r[1] >= 500 or r[1] == 0)
    ok = (
        five == 0
        and len(nul_ids) > 0
        and (nul_ids | after_ids) <= stored
        and counters["dropped_total"] == 0
    )
    note = "" if keel.store == "postgresql" else "SQLite stores a NUL; PostgreSQL is the test"
    return Result("pass" if ok else "fail", counts, note)


async def probe_store_outage(keel: Keel, profile: Profile) -> Result:
    if keel.db_proxy is None:
        return Result("skipped", note=f"PostgreSQL does not answer at {POSTGRES_ADMIN_URL}")
    proxy = keel.db_proxy
    spill = keel.data_dir / "spill"
    report: dict[str, Any] = {}

    async def outage() -> None:
        await asyncio.sleep(profile.load_s / 4)
        await proxy.cut()
        report["cut_at_s"] = round(profile.load_s / 4, 1)
        cut_until = time.monotonic() + profile.cut_s
        while time.monotonic() < cut_until:
            if spill.exists():  # the spill files, while they exist, for the file_modes probe
                seen, loose = loose_modes(spill)
                keel.spill_seen["entries"] = max(keel.spill_seen.get("entries", 0), seen)
                keel.spill_seen.setdefault("loose", {}).update(loose)
            await asyncio.sleep(0.2)
        await proxy.restore()
        report["down_s"] = profile.cut_s

    results = await closed_loop(
        keel.system.url,
        keel.admin,
        8,
        profile.load_s,
        lambda n: chat_body(stream=n % 4 == 0),
        during=outage,
    )
    ids = trace_ids([r for r in results if r[1] == 200])
    held, waited = await wait_for_traces(keel.database_url, ids, profile.settle_s)
    counters = await trace_counters(keel.system)
    counts = {
        "requests": len(results),
        "statuses": statuses(results),
        **report,
        "answered": len(ids),
        "stored": held,
        "waited_after_load_s": waited,
        "trace_counters": counters,
    }
    ok = (
        held == len(ids) == len(results)
        and counters["dropped_total"] == 0
        and counters["spilled_total"] > 0
    )
    note = "" if counters["spilled_total"] > 0 else "nothing spilled: the cut was too short"
    return Result("pass" if ok else "fail", counts, note)


async def probe_redis_outage(keel: Keel, profile: Profile) -> Result:
    if keel.redis_proxy is None:
        return Result("skipped", note="Redis does not answer on 127.0.0.1:6379")
    proxy = keel.redis_proxy
    limit = 4
    created = await admin_call(
        keel,
        "POST",
        "/api/keys",
        {"name": "faults-concurrency", "role": "app", "limits": {"concurrency": limit}},
    )
    app_key = created["key"]

    async def outage() -> None:
        await asyncio.sleep(profile.load_s / 3)
        await proxy.cut()
        await asyncio.sleep(profile.cut_s)
        await proxy.restore()

    # Exactly `limit` clients, each waiting for its answer: never more in flight than allowed.
    results = await closed_loop(
        keel.system.url, app_key, limit, profile.load_s, lambda _: chat_body(), during=outage
    )
    refusals = Counter()
    for _, status, _, body in results:
        if status == 429:
            with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
                refusals[orjson.loads(body)["error"]["code"] or "?"] += 1
    counts = {
        "concurrency_limit": limit,
        "clients": limit,
        "requests": len(results),
        "statuses": statuses(results),
        "refusals_by_code": dict(refusals),
        "redis_cut_s": profile.cut_s,
    }
    bad = sum(1 for r in results if r[1] == 429 or r[1] >= 500 or r[1] == 0)
    return Result("pass" if bad == 0 else "fail", counts)


async def probe_upstream_kill(keel: Keel, running: Children, profile: Profile) -> Result:
    await route_over(
        keel, "faults-ft", {"faults-up-a": keel.stubs["a"], "faults-up-b": keel.stubs["b"]}
    )
    killed: dict[str, float] = {}

    async def kill() -> None:
        await asyncio.sleep(profile.kill_load_s / 3)
        os.kill(running.pid("stub-a"), signal.SIGKILL)
        killed["at"] = time.monotonic()

    results = await closed_loop(
        keel.system.url,
        keel.admin,
        8,
        profile.kill_load_s,
        lambda n: chat_body(model="faults-ft", stream=n % 4 == 0),
        during=kill,
    )
    after = [r for r in results if r[0] > killed["at"]]
    counts = {
        "requests": len(results),
        "statuses": statuses(results),
        "after_the_kill": len(after),
        "after_the_kill_by_target": dict(Counter(r[2].get("x-keel-target", "?") for r in after)),
    }
    ok = all(r[1] == 200 for r in results) and len(after) > 0
    return Result("pass" if ok else "fail", counts)


async def probe_file_modes(keels: list[Keel]) -> Result:
    counts: dict[str, Any] = {}
    loose_all: dict[str, str] = {}
    for keel in keels:
        # keel.yaml is the suite's own file (written before Keel started), not Keel's.
        seen, loose = loose_modes(keel.data_dir, skip=("keel.yaml",))
        counts[f"{keel.store}_data_dir_entries"] = seen
        loose_all |= {f"{keel.store}:{k}": v for k, v in loose.items()}
        counts[f"{keel.store}_spill_entries_seen_during_outage"] = keel.spill_seen.get("entries", 0)
        loose_all |= {f"spill:{k}": v for k, v in keel.spill_seen.get("loose", {}).items()}
    counts["readable_by_others"] = loose_all
    return Result("pass" if not loose_all else "fail", counts)


async def probe_soak(keel: Keel, profile: Profile) -> Result:
    idle = rss_bytes(keel.system.pid)
    sample_s = max(1.0, profile.soak_s / 12)
    counts_ = await soak_load(keel.system, profile.soak_rate, profile.soak_s, sample_s)
    summary = soak_summary(counts_, profile.soak_s / 4, idle)
    summary.pop("samples")
    growth = summary["growth_second_half_pct"]
    ok = summary["errors"] == 0 and growth <= 5.0
    note = "pass: no errors and RSS growth over the second half at most 5 %"
    return Result("pass" if ok else "fail", {"rate": profile.soak_rate, **summary}, note)


# -- setup -------------------------------------------------------------------------------


def start_stubs(running: Children) -> dict[str, str]:
    """Two stub upstreams, "a" and "b", each its own process (so one can be SIGKILLed)."""
    urls = {}
    for arm in ("a", "b"):
        port = free_port()
        argv = [sys.executable, str(BENCH_DIR / "stub.py"), "--port", str(port)]
        running.start(f"stub-{arm}", argv)
        urls[arm] = f"http://127.0.0.1:{port}/v1"
        wait_until_ready(running, f"stub-{arm}", f"{urls[arm]}/models")
    return urls


def postgres_up() -> bool:
    engine = create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:  # any failure means: no PostgreSQL for this run
        return False
    finally:
        engine.dispose()


def redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def postgres_database(name: str, drop: bool = False) -> str:
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            if drop:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            else:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


async def start_main(running: Children, tmp: Path, stubs: dict[str, str]) -> Keel:
    env = {
        "KEEL_REQUEST_BODY_TIMEOUT": str(DEADLINE_S),
        "KEEL_REQUEST_HEADER_TIMEOUT": str(DEADLINE_S),
        "KEEL_BREAKER_FAILURES": "2",
        "KEEL_BREAKER_COOLDOWN": "1",
    }
    system = await asyncio.to_thread(
        start_keel, running, tmp, stubs["b"], "keel", tracing=True, limits=False, env_extra=env
    )
    data_dir = tmp / "keel"
    database_url = f"sqlite:///{data_dir / 'keel.db'}"
    return Keel(system, data_dir, system.api_key or "", database_url, "sqlite", stubs)


async def start_scale_out(
    running: Children,
    tmp: Path,
    stubs: dict[str, str],
    database: str | None,
    redis_prefix: str | None,
) -> Keel:
    env: dict[str, str] = {}
    db_proxy = redis_proxy = None
    direct = via_proxy = None
    if database:
        db_proxy = TcpProxy("127.0.0.1", 5432)
        await db_proxy.start()
        direct = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{database}"
        via_proxy = direct.replace("127.0.0.1:5432", f"127.0.0.1:{db_proxy.port}")
    if redis_prefix:
        redis_proxy = TcpProxy("127.0.0.1", 6379)
        await redis_proxy.start()
        env |= {
            "KEEL_REDIS_URL": f"redis://127.0.0.1:{redis_proxy.port}/0",
            "KEEL_REDIS_PREFIX": redis_prefix,
        }
    system = await asyncio.to_thread(
        start_keel,
        running,
        tmp,
        stubs["b"],
        "keel-scale",
        tracing=True,
        limits=False,
        env_extra=env or None,
        database_url=via_proxy,
    )
    data_dir = tmp / "keel-scale"
    return Keel(
        system,
        data_dir,
        system.api_key or "",
        database_url=direct or f"sqlite:///{data_dir / 'keel.db'}",
        store="postgresql" if database else "sqlite",
        stubs=stubs,
        db_proxy=db_proxy,
        redis_proxy=redis_proxy,
    )


async def suite(tmp: Path, profile: Profile, only: set[str]) -> dict[str, Any]:
    database = f"keel_faults_{secrets.token_hex(5)}" if postgres_up() else None
    prefix = f"keel-faults-{secrets.token_hex(5)}" if redis_up() else None
    results: dict[str, dict[str, Any]] = {}
    scale: Keel | None = None
    try:
        if database:
            await asyncio.to_thread(postgres_database, database)
        with children(tmp) as running:
            stubs = start_stubs(running)
            _progress(
                "starting the main Keel (SQLite) and the scale-out Keel "
                f"({'PostgreSQL' if database else 'SQLite'}"
                f"{' + Redis' if prefix else ''}) ..."
            )
            main = await start_main(running, tmp, stubs)
            scale = await start_scale_out(running, tmp, stubs, database, prefix)
            plan: list[tuple[str, Callable[[], Awaitable[Result]]]] = [
                ("bad_input", lambda: probe_bad_input(main, profile)),
                ("tenancy", lambda: probe_tenancy(main)),
                ("secrets_at_rest", lambda: probe_secrets_at_rest([main, scale])),
                ("slow_upload_flood", lambda: probe_slow_upload_flood(main, profile)),
                ("nul_in_trace", lambda: probe_nul_in_trace(scale, profile)),
                ("store_outage", lambda: probe_store_outage(scale, profile)),
                ("redis_outage", lambda: probe_redis_outage(scale, profile)),
                ("upstream_kill", lambda: probe_upstream_kill(main, running, profile)),
                ("file_modes", lambda: probe_file_modes([main, scale])),
                ("soak", lambda: probe_soak(main, profile)),
            ]
            for name, probe in plan:
                if only and name not in only:
                    continue
                _progress(f"probe {name} ...")
                started = time.monotonic()
                try:
                    result = await probe()
                except BenchError as exc:
                    result = Result("fail", note=str(exc))
                elapsed = round(time.monotonic() - started, 1)
                results[name] = {
                    "verdict": result.verdict,
                    "elapsed_s": elapsed,
                    "counts": result.counts,
                    "note": result.note,
                }
                _progress(f"probe {name}: {result.verdict} ({elapsed} s) {result.note}")
    finally:
        for proxy in (scale.db_proxy, scale.redis_proxy) if scale else ():
            if proxy is not None:
                await proxy.cut()
        if database:
            await asyncio.to_thread(postgres_database, database, True)
        if prefix:
            await asyncio.to_thread(_drop_redis_prefix, prefix)
    failed = [name for name, r in results.items() if r["verdict"] == "fail"]
    return {
        "verdict": "fail" if failed else "pass",
        "failed": failed,
        "stores": {
            "main": "sqlite",
            "scale_out": "postgresql" if database else "sqlite",
            "redis": bool(prefix),
        },
        "probes": results,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="About a minute instead of three.")
    parser.add_argument("--only", default="", help=f"Comma-separated, of: {', '.join(PROBES)}.")
    parser.add_argument("--json-out", type=Path, default=None, help="Also write the JSON here.")
    args = parser.parse_args()
    only = {p.strip() for p in args.only.split(",") if p.strip()}
    unknown = only - set(PROBES)
    if unknown:
        parser.error(f"unknown probe(s) {', '.join(sorted(unknown))}; known: {', '.join(PROBES)}")
    profile = QUICK if args.quick else FULL

    def run() -> dict[str, Any]:
        started = time.time()
        with tempfile.TemporaryDirectory(prefix="keel-faults-") as tmp:
            found = uvloop.run(suite(Path(tmp), profile, only))
        return {
            "machine": machine(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "profile": "quick" if args.quick else "full",
            "command": " ".join(["python", "bench/faults.py", *sys.argv[1:]]),
            "elapsed_s": round(time.time() - started, 1),
            **found,
        }

    result = run_main(run, args.json_out, "fault suite")
    return 0 if result is not None and result["verdict"] == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
