"""Router overhead per request for routes of 1, 10 and 100 targets (should stay flat).

Runs resolve + target choice + the attempt loop against a provider that answers at once,
so what is timed is the router itself. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from keel.auth.keys import Principal
from keel.providers.base import ProviderResponse
from keel.routing.router import Router
from keel.routing.table import Route, RoutingTable, Target

PRINCIPAL = Principal(key_id="bench", project_id="default", role="app")
ANSWER = ProviderResponse({"choices": []}, None)


class Instant:
    name = "instant"

    async def send(self, op: str, payload: dict[str, Any]) -> ProviderResponse:
        return ANSWER


async def call(target: Target) -> ProviderResponse:
    return await target.provider.send("chat/completions", {})


def table_with(targets: int, sticky: bool) -> RoutingTable:
    weighted = tuple((Target(f"m@{i}", Instant(), "m"), 1) for i in range(1, targets + 1))  # type: ignore[arg-type]
    route = Route("chat", weighted, sticky="user" if sticky else None)
    return RoutingTable(routes={("default", "chat"): route})


async def measure(targets: int, sticky: bool, requests: int) -> dict[str, float]:
    router = Router()
    router.table = table_with(targets, sticky)
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for index in range(requests):
            route = router.resolve("default", "chat")
            await router.run(route, PRINCIPAL, f"user{index % 97}", call)
        rounds.append((time.perf_counter() - started) / requests * 1e6)
    return {
        "targets": targets,
        "sticky": sticky,
        "us_per_request": round(statistics.median(rounds), 2),
    }


async def main(requests: int) -> None:
    results = [await measure(n, sticky, requests) for sticky in (False, True) for n in (1, 10, 100)]
    base = {r["sticky"]: r["us_per_request"] for r in results if r["targets"] == 1}
    for r in results:
        r["ratio_to_1_target"] = round(r["us_per_request"] / base[r["sticky"]], 2)
    print(json.dumps({"benchmark": "router_overhead", "requests_per_round": requests,
                      "results": results}, indent=2))  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20000)
    asyncio.run(main(parser.parse_args().requests))
