"""Experiment subjects beyond a model or prompt, over the scriptable upstream: a knowledge-base
configuration (each item a RAG call through the request path) and a workflow (each item a
run, its llm step a call); unknown bases and workflows refused before any run is made."""

from __future__ import annotations

from typing import Any

from keel.knowledge.service import KnowledgeBases
from tests.evals.conftest import Keel

HANDBOOK = b"""# Leave policy

## Holidays

Every employee gets 28 days of paid holiday a year, booked through the HR portal.
"""
KB = {"name": "handbook", "top_k": 1, "mode": "lexical"}
ASK = {
    "name": "ask",
    "input": {"type": "object", "properties": {"question": {"type": "string"}},
              "required": ["question"], "additionalProperties": False},
    "steps": [{"id": "answer", "llm": {"model": "fake-model", "messages": [
        {"role": "user", "content": "Q: {{ input.question }}"}]}}],
}  # fmt: skip


async def handbook(keel: Keel) -> None:
    knowledge = keel.services.extras["knowledge"]
    assert isinstance(knowledge, KnowledgeBases)
    knowledge.create("default", "handbook", actor="test")
    await knowledge.ingest("default", "handbook", "leave.md", HANDBOOK, actor="test")


def experiment(subject: dict[str, Any], dataset: str = "leave") -> dict[str, Any]:
    return {"name": "subjects", "dataset": dataset, "subjects": [subject],
            "scorers": [{"type": "contains", "name": "mentions"}]}  # fmt: skip


async def refused_whole(keel: Keel) -> None:
    """Unknown bases and workflows, and subjects that cannot be, are refused naming the
    field, and no run is made (the caller made one good run before)."""
    cases: list[tuple[dict[str, Any], int, str, str]] = [
        ({"model": "fake-model", "kb": "wiki"}, 404, "subjects[0].kb",
         "unknown knowledge base 'wiki' (known: handbook)"),
        ({"model": "fake-model", "kb": {"name": "handbook", "top_k": 0}}, 400,
         "subjects[0].kb.top_k", "top_k"),
        ({"kb": "handbook"}, 400, "subjects[0]", "a model (or route) or a prompt to answer"),
        ({"workflow": "nope"}, 404, "subjects[0].workflow", "unknown workflow 'nope'"),
        ({"model": "workflow:ask", "params": {"temperature": 0}}, 400, "subjects[0]",
         "drop params"),
    ]  # fmt: skip
    for subject, status, param, words in cases:
        response = await keel.call("POST", "/api/experiments", json=experiment(subject))
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert (error["param"], words in error["message"]) == (param, True), error
    assert len((await keel.ok("GET", "/api/experiments"))["data"]) == 1  # none half-made


async def test_a_knowledge_base_subject_makes_each_item_a_rag_call(keel: Keel) -> None:
    await handbook(keel)
    items = [
        {"input": "How many days of paid holiday?", "expected": "holiday"},
        {"input": "Is holiday booked through the HR portal?", "expected": "portal"},
    ]
    await keel.ok("POST", "/api/datasets", json={"name": "leave", "items": items})
    subject = {"model": "fake-model", "kb": KB, "params": {"temperature": 0}}
    (run,) = (await keel.ok("POST", "/api/experiments", json=experiment(subject)))["data"]
    assert run["title"] == "fake-model kb:handbook"
    done = await keel.finished(run["id"])
    assert (done["state"], done["summary"]["errors"]) == ("succeeded", 0)
    assert done["summary"]["metrics"]["mentions"]["mean"] == 1.0
    assert len(keel.upstream.requests) == 2
    for sent in keel.upstream.requests:
        assert "kb" not in sent  # retrieved by the gateway, not passed on
        system = sent["messages"][0]
        assert system["role"] == "system"
        assert (
            "[1] Leave policy (Leave policy > Holidays)\nEvery employee gets 28 days"
            in (system["content"])
        )
    await refused_whole(keel)


async def test_a_workflow_subject_runs_the_workflow_for_each_item(keel: Keel) -> None:
    created = await keel.call("POST", "/api/workflows", json={"spec": ASK})
    assert created.status_code == 201, created.text
    items = [{"input": {"variables": {"question": "Paris"}}, "expected": "Q: Paris"},
             {"input": "Rome", "expected": "Q: Rome"}]  # fmt: skip
    await keel.ok("POST", "/api/datasets", json={"name": "cities", "items": items})
    body = experiment({"model": "workflow:ask"}, dataset="cities")
    body["scorers"] = [{"type": "exact", "name": "accuracy"}]
    (run,) = (await keel.ok("POST", "/api/experiments", json=body))["data"]
    assert (run["subject"], run["title"]) == ({"workflow": "ask", "params": {}}, "workflow:ask")
    done = await keel.finished(run["id"])
    assert (done["state"], done["summary"]["errors"]) == ("succeeded", 0)
    # Variables are the run's input; a text item fills the input's one string field.
    assert done["summary"]["metrics"]["accuracy"]["mean"] == 1.0
    sent = sorted(r["messages"][-1]["content"] for r in keel.upstream.requests)
    assert sent == ["Q: Paris", "Q: Rome"]
    results = (await keel.ok("GET", f"/api/experiments/{run['id']}/items"))["data"]
    trace_id = results[0]["trace_ids"][0]
    await keel.services.tracing.recorder.flush()
    trace = await keel.ok("GET", f"/api/traces/{trace_id}")
    assert trace["model"] == "workflow:ask"  # the item's trace is the run's
