"""The evaluation console: datasets with their versions and items linked to source traces,
runs with per-item results, and a comparison with differences, diffs and distribution
charts; a viewer may read it all, another project sees none of it."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx

from keel.jobs.executor import ExecutorOptions
from keel.server.openai.files import job_system
from tests.server.admin.test_traces import record
from tests.ui.conftest import Console, login


async def finish(client: httpx.AsyncClient, headers: dict[str, str], run_id: str) -> None:
    for _ in range(3000):
        run = (await client.get(f"/api/experiments/{run_id}", headers=headers)).json()
        if run["state"] in ("succeeded", "failed"):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("run did not finish")


async def test_datasets_runs_and_a_comparison_in_the_console(console: Console) -> None:
    system = job_system(console.services)
    system.executor.options = ExecutorOptions(concurrency=4, heartbeat_seconds=0.05,
                                              poll_seconds=0.05)  # fmt: skip
    await system.start()
    trace = record(42, input=json.dumps([{"role": "user", "content": "Capital of Peru?"}]),
                   output="Lima", route="chat")  # fmt: skip
    console.services.tracing.store.write([trace])
    admin = {"Authorization": f"Bearer {console.keys['admin']}"}
    try:
        async with console.client() as client:
            made = await client.post("/api/datasets/capitals/from-traces",
                                     json={"route": "chat"}, headers=admin)  # fmt: skip
            assert made.status_code == 200, made.text
            await client.post("/api/datasets/capitals/items", headers=admin, json={
                "items": [{"input": "Paris", "expected": "Paris"}]})  # fmt: skip
            runs: list[Any] = []
            for _ in range(2):  # the same subject twice: nothing changes between them
                body = {"name": "cap", "dataset": "capitals", "label": None,
                        "subjects": [{"model": "fake-model"}],
                        "scorers": [{"type": "exact", "name": "accuracy"}]}  # fmt: skip
                started = await client.post("/api/experiments", json=body, headers=admin)
                assert started.status_code == 201, started.text
                run_id = started.json()["data"][0]["id"]
                await finish(client, admin, run_id)
                runs.append(run_id)

            await login(client, console.keys["viewer"])
            listing = await client.get("/ui/datasets")
            assert listing.status_code == 200
            assert 'href="/ui/datasets/capitals"' in listing.text
            detail = await client.get("/ui/datasets/capitals")
            assert detail.status_code == 200
            assert "v2" in detail.text
            assert "traces" in detail.text
            assert f'href="/ui/traces/{trace.trace["trace_id"]}"' in detail.text
            old = await client.get("/ui/datasets/capitals?version=1")
            assert "Capital of Peru?" in old.text
            assert "Paris" not in old.text.split('id="items"')[1]

            experiments = await client.get("/ui/experiments")
            assert all(f'href="/ui/experiments/{r}"' in experiments.text for r in runs)
            run = await client.get(f"/ui/experiments/{runs[0]}")
            assert run.status_code == 200
            assert re.search(r"accuracy \(exact\)</td><td>0.0..1.0</td><td>higher", run.text)
            assert "<svg" in run.text
            assert "Distribution of accuracy" in run.text

            compared = await client.get(f"/ui/experiments/compare?run={runs[0]}&run={runs[1]}")
            assert compared.status_code == 200, compared.text
            assert 'id="differences"' in compared.text
            assert "+0.0000" in compared.text
            assert "Items that changed (0 of 2)" in compared.text
            one = await client.get(f"/ui/experiments/compare?run={runs[0]}")
            assert one.status_code == 400
            missing = await client.get("/ui/datasets/nope")
            assert missing.status_code == 404
            assert "no dataset" in missing.text
    finally:
        await system.stop()
