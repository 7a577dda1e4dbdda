"""Closed-loop load generator for bench/overhead.py: C workers send chat requests back to back.

Runs as its own process against 127.0.0.1 only and prints one LoadResult as JSON on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import uvloop

API_KEY_ENV = "BENCH_API_KEY"  # read from the environment so the key stays out of `ps`
_DONE = b"data: [DONE]\n\n"
_ERROR_BACKOFF_S = 0.01


@dataclass(frozen=True, slots=True)
class LoadSpec:
    url: str
    concurrency: int
    stream: bool
    warmup_s: float
    duration_s: float
    max_requests: int
    request_timeout_s: float
    api_key: str | None = None
    model: str = "stub"

    def body(self) -> bytes:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": "Say hi"}],
            "max_tokens": 16,
        }
        if self.stream:
            # Keel always asks its upstream for usage; ask the stub directly for it too, so
            # both paths carry the same events.
            payload |= {"stream": True, "stream_options": {"include_usage": True}}
        return orjson.dumps(payload)

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one run measured; latencies in milliseconds, throughput in requests per second."""

    url: str
    concurrency: int
    stream: bool
    duration_s: float
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    ttfb_p50_ms: float | None
    ttfb_p99_ms: float | None
    error_sample: str | None

    @classmethod
    def from_json(cls, raw: str | bytes) -> LoadResult:
        return cls(**json.loads(raw))


@dataclass(slots=True)
class _Samples:
    latencies: list[float] = field(default_factory=list)
    ttfbs: list[float] = field(default_factory=list)
    started: int = 0
    errors: int = 0
    error_sample: str | None = None


@dataclass(frozen=True, slots=True)
class _Window:
    start: float
    end: float


class BadAnswer(Exception):
    """The target answered, but not with a usable completion."""


class NoAnswers(Exception):
    """Not one request succeeded, so there is nothing to measure."""


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not values:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(values)))
    return values[rank - 1]


async def _request(
    session: aiohttp.ClientSession, spec: LoadSpec, body: bytes, headers: dict[str, str]
) -> tuple[float, float | None]:
    """Send one request; return (latency, time to first body byte) in seconds."""
    started = time.perf_counter()
    first_byte: float | None = None
    received = bytearray()
    async with session.post(spec.url, data=body, headers=headers) as response:
        async for data in response.content.iter_any():
            if first_byte is None:
                first_byte = time.perf_counter() - started
            received += data
        latency = time.perf_counter() - started
        _check_answer(response.status, bytes(received), spec.stream)
    return latency, first_byte if spec.stream else None


def _check_answer(status: int, body: bytes, stream: bool) -> None:
    if status != 200:
        raise BadAnswer(f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}")
    if stream and (not body.endswith(_DONE) or b'"error"' in body):
        raise BadAnswer(f"stream did not end cleanly: {body[-200:].decode('utf-8', 'replace')}")
    if not stream and b'"choices"' not in body:
        raise BadAnswer(f"answer without choices: {body[:200].decode('utf-8', 'replace')}")


async def _worker(
    session: aiohttp.ClientSession, spec: LoadSpec, window: _Window, samples: _Samples
) -> None:
    body, headers = spec.body(), spec.headers()
    while samples.started < spec.max_requests:
        started = time.perf_counter()
        if started >= window.end:
            return
        samples.started += 1
        measured = started >= window.start
        try:
            latency, first_byte = await _request(session, spec, body, headers)
        except (aiohttp.ClientError, TimeoutError, BadAnswer) as exc:
            if measured:
                samples.errors += 1
                samples.error_sample = samples.error_sample or f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(_ERROR_BACKOFF_S)  # a refused connection fails in microseconds
            continue
        if measured:
            samples.latencies.append(latency)
            if first_byte is not None:
                samples.ttfbs.append(first_byte)


async def run(spec: LoadSpec) -> LoadResult:
    connector = aiohttp.TCPConnector(limit=spec.concurrency)
    timeout = aiohttp.ClientTimeout(total=spec.request_timeout_s)
    samples = _Samples()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        now = time.perf_counter()
        window = _Window(now + spec.warmup_s, now + spec.warmup_s + spec.duration_s)
        workers = [_worker(session, spec, window, samples) for _ in range(spec.concurrency)]
        async with asyncio.timeout(spec.warmup_s + spec.duration_s + spec.request_timeout_s + 5):
            await asyncio.gather(*workers)
    return _summarise(spec, samples)


def _summarise(spec: LoadSpec, samples: _Samples) -> LoadResult:
    if not samples.latencies:
        raise NoAnswers(
            f"no request to {spec.url} succeeded in {spec.duration_s:g}s "
            f"({samples.errors} failed; first: {samples.error_sample or 'none sent'})"
        )
    latencies = sorted(samples.latencies)
    ttfbs = sorted(samples.ttfbs)

    def ms(values: list[float], pct: float) -> float:
        return round(percentile(values, pct) * 1000, 3)

    return LoadResult(
        url=spec.url,
        concurrency=spec.concurrency,
        stream=spec.stream,
        duration_s=spec.duration_s,
        requests=len(latencies),
        errors=samples.errors,
        rps=round(len(latencies) / spec.duration_s, 1),
        p50_ms=ms(latencies, 50),
        p90_ms=ms(latencies, 90),
        p99_ms=ms(latencies, 99),
        ttfb_p50_ms=ms(ttfbs, 50) if spec.stream else None,
        ttfb_p99_ms=ms(ttfbs, 99) if spec.stream else None,
        error_sample=samples.error_sample,
    )


def _parse_args() -> LoadSpec:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="Chat completions URL on 127.0.0.1.")
    parser.add_argument("--concurrency", type=int, default=1, help="Workers in flight.")
    parser.add_argument("--stream", action="store_true", help="Ask for server-sent events.")
    parser.add_argument("--warmup", type=float, default=1.0, help="Unmeasured seconds first.")
    parser.add_argument("--duration", type=float, default=10.0, help="Measured seconds.")
    parser.add_argument("--max-requests", type=int, default=2_000_000, help="Hard cap.")
    parser.add_argument("--timeout", type=float, default=30.0, help="Per-request seconds.")
    parser.add_argument("--model", default="stub", help="Model name in the request body.")
    args = parser.parse_args()
    if urlsplit(args.url).hostname != "127.0.0.1":
        parser.error(f"--url must point at 127.0.0.1 (got {args.url!r})")
    if args.concurrency < 1 or args.duration <= 0:
        parser.error("--concurrency must be at least 1 and --duration above 0")
    return LoadSpec(
        url=args.url,
        concurrency=args.concurrency,
        stream=args.stream,
        warmup_s=args.warmup,
        duration_s=args.duration,
        max_requests=args.max_requests,
        request_timeout_s=args.timeout,
        api_key=os.environ.get(API_KEY_ENV),
        model=args.model,
    )


def main() -> None:
    try:
        result = uvloop.run(run(_parse_args()))
    except NoAnswers as exc:
        sys.exit(f"load.py: {exc}")
    print(json.dumps(asdict(result)))


if __name__ == "__main__":
    main()
