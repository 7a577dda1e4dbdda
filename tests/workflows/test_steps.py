"""Steps that reach other services: retrieve searches a knowledge base of the run's project
and hands the passages it found to the next step."""

from __future__ import annotations

from pathlib import Path

from keel.knowledge.chunk import whitespace_tokens
from keel.knowledge.service import KnowledgeBases
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
