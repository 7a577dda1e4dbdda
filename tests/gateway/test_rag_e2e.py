"""RAG end to end: a real `keel serve` with the bundled SmolLM2 and MiniLM, three documents
ingested, questions asked through the official openai SDK, streamed and not."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openai import NotFoundError, OpenAI

from tests.support.keel_process import KeelProcess, start_keel

pytestmark = pytest.mark.e2e

DOCUMENTS = {
    "leave.md": b"# Leave policy\n\n## Holidays\n\nEvery employee gets 28 days of paid holiday "
    b"a year, booked through the HR portal.\n\n## Sick leave\n\nSick leave is paid from the "
    b"first day; tell your manager before 10am.\n",
    "expenses.txt": b"Expenses. Travel costs are reimbursed within 14 days once the receipt "
    b"is uploaded to the finance tool. Hotels are capped at 150 euros a night.\n",
    "security.html": b"<html><head><title>Security</title></head><body><h1>Security</h1>"
    b"<p>Laptops must use full-disk encryption. Passwords are rotated every 90 days.</p>"
    b"</body></html>",
}
QUESTION = [{"role": "user", "content": "How many days of paid holiday does an employee get?"}]
KB = {"kb": {"name": "handbook", "top_k": 2}}


@pytest.fixture(scope="module")
def keel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeelProcess]:
    process = start_keel(tmp_path_factory.mktemp("keel-rag") / "data")
    process.api("POST", "/api/kbs", {"name": "handbook"})
    for source, data in DOCUMENTS.items():
        response = httpx.post(
            f"{process.base_url}/api/kbs/handbook/documents", params={"source": source},
            content=data, headers={"Authorization": f"Bearer {process.api_key}"}, timeout=120,
        )  # fmt: skip
        assert response.status_code == 200, response.text
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(keel: KeelProcess) -> OpenAI:
    return OpenAI(base_url=f"{keel.base_url}/v1", api_key=keel.api_key, max_retries=0)


def stored(keel: KeelProcess, trace_id: str, ready: Any, wait: float = 60) -> dict[str, Any]:
    """The stored trace, once `ready(trace)` (the writer and the scorer work in the
    background, each within a second or so)."""
    deadline = time.monotonic() + wait
    while True:
        response = httpx.get(f"{keel.base_url}/api/traces/{trace_id}",
                             headers={"Authorization": f"Bearer {keel.api_key}"})  # fmt: skip
        if response.status_code == 200 and ready(response.json()):
            found: dict[str, Any] = response.json()
            return found
        assert time.monotonic() < deadline, response.text
        time.sleep(0.2)


def groundedness(trace: dict[str, Any]) -> list[dict[str, Any]]:
    return [score for score in trace.get("scores", []) if score["name"] == "groundedness"]


def test_a_whole_answer_cites_the_chunk_that_holds_the_fact(
    keel: KeelProcess, client: OpenAI
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="smollm2", messages=QUESTION, max_tokens=48, temperature=0, extra_body=KB
    )
    answer = raw.parse()
    assert answer.choices[0].message.content
    citations = (answer.model_extra or {})["citations"]
    top = citations[0]
    assert (top["index"], top["kb"], top["source"]) == (1, "handbook", "leave.md")
    assert top["heading_path"][-1] == "Holidays"
    chunks = keel.api("GET", f"/api/kbs/handbook/documents/{top['document_id']}/chunks")
    [chunk] = [c for c in chunks["data"] if c["id"] == top["chunk_id"]]
    assert "28 days" in chunk["text"]
    assert (chunk["start"], chunk["end"]) == (top["start"], top["end"])
    assert raw.headers["x-keel-knowledge"] == "handbook"

    trace = stored(keel, raw.headers["x-keel-trace-id"], lambda t: groundedness(t))
    [retrieve] = [s for s in trace["spans"][0]["children"] if s["name"] == "keel.retrieve"]
    assert retrieve["attributes"]["keel.knowledge.chunk_ids"][0] == top["chunk_id"]
    [score] = groundedness(trace)
    assert 0 <= score["value"] <= 1
    assert score["source"] == "evaluator"


def test_a_stream_ends_with_the_same_citations_and_the_sdk_reads_every_chunk(
    client: OpenAI,
) -> None:
    chunks = list(
        client.chat.completions.create(
            model="smollm2",
            messages=QUESTION,
            max_tokens=48,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=KB,
            extra_headers={"X-Keel-Cache": "bypass"},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    last = chunks[-1]
    assert last.choices == []
    citations = (last.model_extra or {})["citations"]
    assert citations[0]["source"] == "leave.md"
    assert any(c.usage is not None for c in chunks)


def test_an_unknown_knowledge_base_is_a_404_naming_it(client: OpenAI) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.chat.completions.create(
            model="smollm2", messages=QUESTION, max_tokens=8, extra_body={"kb": "wiki"}
        )
    assert "unknown knowledge base 'wiki' (known: handbook)" in str(caught.value)


def test_the_sources_are_in_what_the_model_was_sent(keel: KeelProcess, client: OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="smollm2", messages=[{"role": "user", "content": "How often are passwords rotated?"}],
        max_tokens=24, temperature=0, extra_body={"kb": {"name": "handbook", "top_k": 1}},
    )  # fmt: skip
    citations = (raw.parse().model_extra or {})["citations"]
    assert [c["source"] for c in citations] == ["security.html"]
    trace = stored(keel, raw.headers["x-keel-trace-id"], lambda t: t.get("input") is not None)
    sent = json.dumps(trace["input"])
    assert "[1] Security" in sent
    assert "rotated every 90 days" in sent
