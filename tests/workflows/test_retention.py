"""Retention keeps run data bounded: by count (the newest N runs stay) and by age."""

from __future__ import annotations

from tests.workflows.conftest import Bench


async def test_runs_beyond_the_count_are_pruned_with_their_steps(bench: Bench) -> None:
    bench.define({"name": "tiny", "steps": [
        {"id": "a", "transform": {"value": "{{ input.n }}"}},
        {"id": "b", "transform": {"value": "{{ steps.a.output + 1 }}"}},
    ]})  # fmt: skip
    ids = []
    for n in range(120):
        run = await bench.flows.run(bench.principal, "workflow", "tiny", {"n": n})
        assert isinstance(run, dict)
        ids.append(run["id"])
    bench.flows.max_runs = 30
    removed = await bench.flows.prune()
    assert removed == 90
    assert bench.flows.store.count_runs() == 30
    assert bench.flows.store.count_steps() == 60  # the pruned runs' checkpoints went too
    kept = {r["id"] for r in bench.flows.store.runs("default", "tiny", 100)}
    assert kept == set(ids[-30:])  # the newest stay


async def test_runs_older_than_the_age_limit_are_pruned(bench: Bench) -> None:
    bench.define({"name": "tiny", "steps": [{"id": "a", "transform": {"value": 1}}]})
    for _ in range(5):
        await bench.flows.run(bench.principal, "workflow", "tiny", {})
    bench.flows.max_age_s = 1e-6  # everything finished is older than that
    assert await bench.flows.prune() == 5
    assert bench.flows.store.count_runs() == 0
