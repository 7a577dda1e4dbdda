"""Steps that reach other services: retrieve searches a knowledge base of the run's project
and hands the passages it found to the next step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from keel.knowledge.chunk import whitespace_tokens
from keel.knowledge.service import KnowledgeBases
from keel.workflows.service import WorkflowFailed
from tests.support.app import HashEmbedder
from tests.workflows.conftest import Bench

HANDBOOK = b"""# Handbook

## Holidays

Everyone gets 28 days of paid holiday a year, plus public holidays.

## Parking

The car park behind building B is for visitors only.
"""


async def test_retrieve_feeds_the_found_passages_to_the_next_step(
    bench: Bench, tmp_path: Path
) -> None:
    embedder = HashEmbedder()
    kbs = KnowledgeBases(bench.services.database, tmp_path / "kb", lambda: embedder,
                         whitespace_tokens)  # fmt: skip
    kbs.create("default", "handbook", actor="test")
    await kbs.ingest("default", "handbook", "handbook.md", HANDBOOK, actor="test")
    bench.flows.runtime.knowledge = lambda: kbs
    text = {"type": "object", "properties": {"q": {"type": "string"}}}
    bench.define({"name": "rag", "input": text, "steps": [
        {"id": "search", "retrieve": {"kb": "handbook", "query": "{{ input.q }}", "top_k": 1}},
        {"id": "answer", "llm": {"model": "fake-model", "messages": [
            {"role": "user", "content": "{{ steps.search.output.context }}"}]}},
    ]})  # fmt: skip
    run = await bench.flows.run(bench.principal, "workflow", "rag", {"q": "paid holiday days"})
    assert isinstance(run, dict)
    assert run["status"] == "succeeded"
    [hit] = await kbs.search("default", "handbook", "paid holiday days", 1)
    assert run["output"]["text"] == f"[1] {hit.text}"  # the model got the passage found
    shown = await bench.flows.get("default", run["id"])
    assert shown["steps"][0]["output"]["hits"][0]["source"] == "handbook.md"


async def test_a_guard_step_blocks_a_secret_or_lets_the_run_go_on(bench: Bench) -> None:
    guard = bench.services.guard
    assert guard is not None
    guard.put_policy("default", "secrets-only",
                     {"input": [{"type": "secrets", "action": "block"}]}, actor="test")  # fmt: skip
    guard.reload()
    bench.flows.runtime.guard = guard
    scan = {"text": "{{ input.text }}", "policy": "secrets-only", "source": "tool"}
    steps: list[dict[str, Any]] = [
        {"id": "scan", "guard": scan},
        {"id": "after", "transform": {"value": "{{ steps.scan.output.blocked }}"}},
    ]
    bench.define({"name": "scan", "steps": steps})
    clean = await bench.flows.run(bench.principal, "workflow", "scan", {"text": "all fine"})
    assert isinstance(clean, dict)
    assert clean["output"] is False
    leaked = {"text": "key: AKIAIOSFODNN7EXAMPLE secret: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
    with pytest.raises(WorkflowFailed, match="step 'scan' failed: guard policy blocked"):
        await bench.flows.run(bench.principal, "workflow", "scan", leaked)
    scan["on_block"] = "continue"
    bench.define({"name": "scan", "steps": steps})
    went_on = await bench.flows.run(bench.principal, "workflow", "scan", leaked)
    assert isinstance(went_on, dict)
    assert went_on["output"] is True
