"""Ingestion as a job through HTTP: files staged (bad ones refused at once), one job ingests
them with progress on /api/jobs, a second run of the same files embeds nothing, and the
staged files are gone when the job ends. A hash embedder stands in for MiniLM."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from keel.server.app import create_app
from keel.server.openai.files import job_system
from keel.server.services import stop_services
from tests.knowledge.samples import MARKDOWN, pdf_bytes
from tests.support.app import build_services
from tests.support.upstream import FakeUpstream

Client = tuple[httpx.AsyncClient, dict[str, str]]


@pytest.fixture
async def api(tmp_path: Path, upstream: FakeUpstream) -> AsyncIterator[Client]:
    services, key = build_services(tmp_path, upstream.base_url)
    app = create_app(services.settings, services=services)
    system = job_system(services)
    await system.start()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://keel") as client:
        yield client, {"Authorization": f"Bearer {key}"}
    await system.stop()
    await stop_services(services)


async def _stage(api: Client, source: str, data: bytes) -> httpx.Response:
    client, auth = api
    return await client.post(
        "/api/kbs/docs/files", params={"source": source}, content=data, headers=auth
    )


async def _finished(api: Client, job_id: str) -> dict[str, Any]:
    client, auth = api
    for _ in range(600):  # the executor polls every fraction of a second
        job: dict[str, Any] = (await client.get(f"/api/jobs/{job_id}", headers=auth)).json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {job}")


async def _ingest(api: Client, files: list[dict[str, Any]]) -> dict[str, Any]:
    client, auth = api
    started = await client.post("/api/kbs/docs/ingest", json={"files": files}, headers=auth)
    assert started.status_code == 201, started.text
    assert started.json()["kind"] == "kb.ingest"
    return await _finished(api, started.json()["id"])


async def test_staged_files_ingest_as_one_job_and_a_rerun_embeds_nothing(api: Client) -> None:
    client, auth = api
    await client.post("/api/kbs", json={"name": "docs"}, headers=auth)
    sources = {
        "handbook.md": MARKDOWN,
        "notes.txt": b"Parking is free after 6pm.\n",
        "report.pdf": pdf_bytes(["Quarterly revenue grew by eight percent."]),
    }
    staged = []
    for source, data in sources.items():
        response = await _stage(api, source, data)
        assert response.status_code == 201, response.text
        staged.append({"file_id": response.json()["id"], "metadata": {"team": "hr"}})

    job = await _ingest(api, staged)
    assert job["state"] == "succeeded"
    assert job["progress"]["done"] == job["progress"]["total"] == 3
    assert job["result"]["created"] == 3
    assert job["result"]["chunks"] > 3
    assert job["items"]["done"] == 3
    found = await client.post(
        "/api/kbs/docs/search",
        headers=auth,
        json={"query": "free parking", "mode": "lexical", "top_k": 1},
    )
    hit = found.json()["data"][0]
    assert (hit["source"], hit["metadata"]["team"]) == ("notes.txt", "hr")

    again = await _ingest(
        api, [{"file_id": (await _stage(api, s, d)).json()["id"]} for s, d in sources.items()]
    )
    assert again["result"]["unchanged"] == 3
    assert again["result"]["chunks"] == 0
    # Staged files are dropped as the job ends: one cannot be ingested twice.
    reused = await client.post("/api/kbs/docs/ingest", json={"files": staged[:1]}, headers=auth)
    assert reused.status_code == 404
    assert "no staged file" in reused.json()["error"]["message"]


async def test_bad_files_are_refused_when_staged_and_never_become_items(api: Client) -> None:
    client, auth = api
    await client.post("/api/kbs", json={"name": "docs"}, headers=auth)
    cases = [
        (await _stage(api, "empty.txt", b""), 400, "empty"),
        (await _stage(api, "deck.pptx", b"PK\x03\x04"), 400, "unsupported document type"),
        (await _stage(api, "fake.pdf", b"<html>hi</html>"), 400, "not a PDF"),
        (
            await client.post(
                "/api/kbs/nope/files", params={"source": "a.txt"}, content=b"x", headers=auth
            ),
            404,
            "unknown knowledge base 'nope'",
        ),
        (await client.post("/api/kbs/docs/files", content=b"x", headers=auth), 400, "source"),
        (await client.post("/api/kbs/docs/ingest", json={"files": []}, headers=auth), 400, "files"),
        (
            await client.post(
                "/api/kbs/docs/ingest", json={"files": [{"file_id": "file_x"}]}, headers=auth
            ),
            404,
            "no staged file",
        ),
    ]
    for response, status, words in cases:
        assert response.status_code == status, response.text
        assert words in response.json()["error"]["message"], response.text
    jobs = (await client.get("/api/jobs", params={"kind": "kb.ingest"}, headers=auth)).json()
    assert jobs["data"] == []
    documents = (await client.get("/api/kbs/docs/documents", headers=auth)).json()
    assert documents["data"] == []
