"""What authentication and admission (scopes, limits, budgets) add to each request.

Runs the gateway's request path (key check, then `Gateway.handle`, which settles) against a
provider that answers at once: with access control off, with the key check only, and with
key check plus limits and budget, in-process and over Redis. Prints JSON. With
--admission, times step 2 alone instead, with its sliding windows as full as under load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from keel.auth.keys import Principal
from keel.calls import Call
from keel.gateway.answer import Answer
from keel.gateway.pipeline import Gateway
from keel.limits.admission import Admission
from keel.limits.memory import MemoryBackend
from keel.limits.spec import Limits, ProjectLimits
from keel.providers.base import ProviderResponse, Usage
from keel.routing.table import Target
from keel.server.access import start_access, stop_access
from keel.server.services import Services, build_services
from keel.settings import Settings
from keel.store import migrate
from keel.store.db import Database

BODY = {"model": "instant", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
LIMITS = {"rpm": 2**31, "tpm": 2**31, "concurrency": 10_000, "budget": {"amount": 1e12}}


class Instant:
    name = "instant"

    async def send(self, op: str, payload: dict[str, Any]) -> ProviderResponse:
        return ProviderResponse({"choices": [{"message": {"content": "ok"}}]}, Usage(7, 5))

    async def close(self) -> None:
        pass


async def setup(data_dir: Path, mode: str, prefix: str) -> tuple[Services, str]:
    settings = Settings.model_validate({
        "data_dir": data_dir, "local_model": False, "embeddings": False,
        "redis_url": "redis://127.0.0.1:6379/0" if mode == "redis" else None,
        "redis_prefix": prefix,
    })  # fmt: skip
    database = Database(settings.effective_database_url)
    migrate.upgrade(database)
    services = build_services(settings, database)
    project = services.keys.ensure_project()
    limits = LIMITS if mode in ("memory", "redis") else None
    _, token = services.keys.create_key(project_id=project, role="app", name="bench",
                                        limits=limits)  # fmt: skip
    services.keys.load_cache()
    services.catalog.add_chat(Target("instant", Instant(), "instant",  # type: ignore[arg-type]
                                     input_price_per_m=1.0, output_price_per_m=2.0))  # fmt: skip
    await start_access(services.access)
    if mode in ("off", "auth"):  # no admission step: the path without access control
        services.gateway = Gateway(services.catalog, services.router)
    return services, token


async def measure(mode: str, requests: int, prefix: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        services, token = await setup(Path(tmp), mode, prefix)
        fixed = services.keys.verify_cached(token)
        try:
            rounds, cpu = [], []
            for _ in range(5):
                started, started_cpu = time.perf_counter(), time.process_time()
                for _ in range(requests):
                    principal = fixed if mode == "off" else services.keys.verify_cached(token)
                    assert principal is not None
                    call = Call("chat/completions", dict(BODY), principal, "t")
                    answer = await services.gateway.handle(call)
                    assert isinstance(answer, Answer)
                rounds.append((time.perf_counter() - started) / requests * 1e6)
                cpu.append((time.process_time() - started_cpu) / requests * 1e6)
        finally:
            await stop_access(services.access)
            services.database.dispose()
    return {"mode": mode, "us_per_request": round(statistics.median(rounds), 2),
            "cpu_us_per_request": round(statistics.median(cpu), 2)}  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def measure_admission(case: str, project: ProjectLimits, requests: int) -> dict[str, Any]:
    """Step 2 and its settle alone: a request every 30 ms of a fake clock (so every window
    holds 60 one-second buckets, as under load) and 32 requests in flight."""
    clock = Clock()
    admission = Admission(MemoryBackend(clock), lambda _: project, clock=clock)
    principal = Principal("bench", "bench", "app", limits=Limits.model_validate(LIMITS))
    target = Target("instant", None, "instant", input_price_per_m=1.0,  # type: ignore[arg-type]
                    output_price_per_m=2.0)  # fmt: skip
    held: list[Any] = []
    rounds, cpu = [], []
    for _ in range(5):
        started, started_cpu = time.perf_counter(), time.process_time()
        for _ in range(requests):
            clock.now += 0.03
            held.append((await admission(principal, dict(BODY))).settlement)
            if len(held) > 32:
                await held.pop(0).settle(target, Usage(7, 5))
        rounds.append((time.perf_counter() - started) / requests * 1e6)
        cpu.append((time.process_time() - started_cpu) / requests * 1e6)
    return {"case": case, "us_per_request": round(statistics.median(rounds), 2),
            "cpu_us_per_request": round(statistics.median(cpu), 2)}  # fmt: skip


async def main_admission(requests: int) -> None:
    route = ProjectLimits.model_validate({**LIMITS, "routes": {"instant": {"rpm": 2**31}}})
    results = [
        await measure_admission("key limits", ProjectLimits(), requests),
        await measure_admission("key, project and route limits", route, requests),
    ]
    print(json.dumps({"benchmark": "admission_step", "requests_per_round": requests,
                      "results": results}, indent=2))  # fmt: skip


async def main(requests: int, with_redis: bool) -> None:
    prefix = f"keel-bench-{uuid.uuid4().hex[:8]}"
    modes = ["off", "auth", "memory"] + (["redis"] if with_redis else [])
    results = [await measure(mode, requests, prefix) for mode in modes]
    base = results[0]["us_per_request"]
    for result in results:
        result["added_us"] = round(result["us_per_request"] - base, 2)
    if with_redis:
        client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        stale = list(client.scan_iter(match=f"{prefix}:*"))
        if stale:
            client.delete(*stale)
        client.close()
    print(json.dumps({"benchmark": "access_control_overhead", "requests_per_round": requests,
                      "results": results}, indent=2))  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--no-redis", action="store_true", help="Skip the Redis backend.")
    parser.add_argument("--admission", action="store_true",
                        help="Time step 2 alone (in-process backend, full windows).")  # fmt: skip
    args = parser.parse_args()
    if args.admission:
        asyncio.run(main_admission(args.requests))
    else:
        asyncio.run(main(args.requests, not args.no_redis))
