"""Workflow engine overhead, with a stub upstream (bench/stub.py, its own process).

Prints JSON: per step without checkpoints (the engine's floor), per step with checkpoints
to SQLite, and what a 10-step workflow of llm steps adds over the same 10 calls made one
after the other through `Gateway.handle`. Run: `python bench/workflows.py [--runs N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STEPS = 10


def _transforms() -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"id": "s0", "transform": {"value": "{{ input.n }}"}}]
    for i in range(1, STEPS):
        steps.append(
            {"id": f"s{i}", "transform": {"value": f"{{{{ steps.s{i - 1}.output + 1 }}}}"}}
        )
    return {"name": "chain", "input": {"type": "object"}, "steps": steps}


def _llms() -> dict[str, Any]:
    steps = [
        {
            "id": f"s{i}",
            "llm": {
                "model": "stub",
                "messages": [{"role": "user", "content": f"step {i}: {{{{ input.q }}}}"}],
            },
        }
        for i in range(STEPS)
    ]
    return {"name": "calls", "input": {"type": "object"}, "steps": steps}


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _measure(runs: int, port: int) -> dict[str, Any]:
    from keel.calls import Call
    from keel.providers.openai_compat import OpenAICompatProvider
    from keel.routing.table import Target
    from keel.server.services import build_services, stop_services
    from keel.settings import Settings
    from keel.store import migrate
    from keel.store.db import Database
    from keel.workflows.engine import RunState
    from keel.workflows.service import Workflows

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        settings = Settings.model_validate(
            {"data_dir": data, "local_model": False, "embeddings": False}
        )
        database = Database(settings.effective_database_url)
        migrate.upgrade(database)
        services = build_services(settings, database)
        key = services.keys.bootstrap_admin(data)
        assert key is not None
        services.keys.load_cache()
        principal = await services.keys.verify(key)
        provider = OpenAICompatProvider("stub", f"http://127.0.0.1:{port}/v1")
        services.catalog.add_chat(Target("stub", provider, "stub"))
        services.tracing.start_writer()
        durable = Workflows(
            database,
            services.gateway,
            principal_of=services.keys.principal_of,
            trace_sink=services.tracing.recorder.submit,
        )
        durable.put("default", "workflow", _transforms())
        durable.put("default", "workflow", _llms())
        chain = await durable.compiled("default", "workflow", "chain")
        results: dict[str, Any] = {"steps": STEPS, "runs": runs, "cpus": _cpus()}

        floor: list[float] = []
        cpu = 0.0
        for i in range(runs + 200):
            if i == 200:
                cpu = time.process_time()
            state = RunState("bench", principal, {}, None)
            started = time.perf_counter_ns()
            await durable.engine.run(chain, {"n": i}, state)
            if i >= 200:
                floor.append((time.perf_counter_ns() - started) / 1000 / STEPS)
        cpu_floor = (time.process_time() - cpu) / runs / STEPS * 1e6
        results["no_checkpoints_us_per_step"] = {
            "cpu": round(cpu_floor, 1),
            "p50": round(_p(floor, 0.5), 1),
            "p99": round(_p(floor, 0.99), 1),
            "mean": round(statistics.mean(floor), 1),
        }

        saved: list[float] = []
        for i in range(runs // 4 + 20):
            if i == 20:
                cpu = time.process_time()
            started = time.perf_counter_ns()
            run = await durable.run(principal, "workflow", "chain", {"n": i})
            assert isinstance(run, dict), run
            assert run["status"] == "succeeded", run
            if i >= 20:
                saved.append((time.perf_counter_ns() - started) / 1e6 / STEPS)
        cpu_saved = (time.process_time() - cpu) / (runs // 4) / STEPS * 1e3
        results["sqlite_checkpoints_ms_per_step"] = {
            "cpu": round(cpu_saved, 3),
            "p50": round(_p(saved, 0.5), 3),
            "p99": round(_p(saved, 0.99), 3),
        }

        async def direct() -> float:
            started = time.perf_counter_ns()
            for step in range(STEPS):
                body = {
                    "model": "stub",
                    "messages": [{"role": "user", "content": f"step {step}: hi"}],
                }
                await services.gateway.handle(Call("chat/completions", body, principal))
            return (time.perf_counter_ns() - started) / 1e6

        async def workflow() -> float:
            started = time.perf_counter_ns()
            run = await durable.run(principal, "workflow", "calls", {"q": "hi"})
            assert isinstance(run, dict), run
            assert run["status"] == "succeeded", run
            return (time.perf_counter_ns() - started) / 1e6

        calls: list[float] = []
        flows: list[float] = []
        cpu_calls = cpu_flows = 0.0
        for i in range(runs // 10 + 10):  # interleaved, so both see the same machine
            started_cpu = time.process_time()
            a = await direct()
            middle_cpu = time.process_time()
            b = await workflow()
            if i >= 10:
                calls.append(a)
                flows.append(b)
                cpu_calls += middle_cpu - started_cpu
                cpu_flows += time.process_time() - middle_cpu
        added = [b - a for a, b in zip(calls, flows, strict=True)]
        results["ten_llm_steps"] = {
            "calls_alone_ms_p50": round(_p(calls, 0.5), 2),
            "workflow_ms_p50": round(_p(flows, 0.5), 2),
            "added_ms_p50": round(_p(added, 0.5), 2),
            "ratio": round(_p(flows, 0.5) / _p(calls, 0.5), 3),
            "cpu_calls_ms": round(cpu_calls / len(calls) * 1e3, 2),
            "cpu_workflow_ms": round(cpu_flows / len(flows) * 1e3, 2),
            "cpu_added_ms": round((cpu_flows - cpu_calls) / len(flows) * 1e3, 2),
        }
        results["load_average"] = [round(x, 1) for x in os.getloadavg()]
        await durable.close()
        await services.tracing.close()
        await stop_services(services)
        return results


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--port", type=int, default=18931)
    args = parser.parse_args()
    stub = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "stub.py"), "--port", str(args.port)]
    )
    try:
        time.sleep(1.5)
        print(json.dumps(asyncio.run(_measure(args.runs, args.port)), indent=2))
    finally:
        stub.terminate()
        stub.wait(10)


if __name__ == "__main__":
    main()
