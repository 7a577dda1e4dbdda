"""The item route the Ray actors call for an experiment's items (POST /v1/jobs/…/run), in
process and without a cluster: a signed item runs through the experiment kind and answers
its scores while the store is left to the lease holder; anything else is refused."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from keel.jobs.ray_executor import item_body
from keel.server.app import create_app
from keel.server.openai.files import job_system
from keel.server.services import Services, stop_services
from tests.support.app import build_services
from tests.support.upstream import FakeUpstream


@pytest.fixture
async def keel(
    tmp_path: Path, upstream: FakeUpstream
) -> AsyncIterator[tuple[httpx.AsyncClient, Services]]:
    upstream.echo = True
    services, key = build_services(tmp_path, upstream.base_url)
    app = create_app(services.settings, services=services)  # the executor is not started
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://keel", headers=headers
    ) as http:
        yield http, services
    await stop_services(services)


async def test_a_signed_item_runs_through_its_kind_and_writes_nothing_and_else_is_refused(
    keel: tuple[httpx.AsyncClient, Services], upstream: FakeUpstream
) -> None:
    http, services = keel
    items = [{"input": "Paris", "expected": "Paris"}, {"input": "Bonn", "expected": "Berlin"}]
    assert (await http.post("/api/datasets", json={"name": "q", "items": items})).is_success
    spec = {"name": "e", "dataset": "q", "subjects": [{"model": "fake-model"}],
            "scorers": [{"type": "exact", "name": "accuracy"}]}  # fmt: skip
    (run,) = (await http.post("/api/experiments", json=spec)).json()["data"]
    system = job_system(services)
    job = system.store.get(run["id"])
    assert job is not None
    first, second = system.store.items(job.id)
    assert system.signer is not None

    def post(item_id: int, body: bytes, token: str | None) -> httpx.Request:
        request = http.build_request("POST", f"/v1/jobs/{job.id}/items/{item_id}/run", content=body)
        del request.headers["Authorization"]  # the client's API key
        if token is not None:
            request.headers["Authorization"] = f"Bearer {token}"
        return request

    body = item_body(second)
    token = system.signer.sign(job.id, second.id, job.key_id, body)
    answer = (await http.send(post(second.id, body, token))).json()
    assert answer["ok"] is True
    assert answer["result"]["output"] == "Bonn"  # the echo, through Gateway.handle
    assert answer["result"]["scores"]["accuracy"]["value"] == 0.0  # Bonn is not Berlin
    assert len(upstream.requests) == 1
    # The lease holder records the outcome, not this route: the item is still queued.
    assert [i.state for i in system.store.items(job.id)] == ["queued", "queued"]

    # The same token on another item, or on a changed payload, runs nothing.
    other = await http.send(post(first.id, item_body(first), token))
    assert other.status_code == 401
    assert "does not match this job, item and payload" in other.json()["error"]["message"]
    changed = json.loads(body)
    changed["payload"]["input"] = "Rome"
    tampered = await http.send(post(second.id, json.dumps(changed).encode(), token))
    assert tampered.status_code == 401
    missing = await http.send(post(second.id, body, None))
    assert missing.status_code == 401
    assert "missing item token" in missing.json()["error"]["message"]
    api_key = http.headers["Authorization"].removeprefix("Bearer ")
    assert (await http.send(post(second.id, body, api_key))).status_code == 401
    assert len(upstream.requests) == 1

    # A batch's lines have a route of their own: a token for one is refused here.
    chat = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": chat}
    files = {"file": ("in.jsonl", json.dumps(line).encode() + b"\n")}
    uploaded = (await http.post("/v1/files", files=files, data={"purpose": "batch"})).json()
    batch = (
        await http.post(
            "/v1/batches",
            json={
                "input_file_id": uploaded["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
        )
    ).json()
    (line_item,) = system.store.items(batch["id"])
    line_body = item_body(line_item)
    line_token = system.signer.sign(batch["id"], line_item.id, job.key_id, line_body)
    refused = await http.post(
        f"/v1/jobs/{batch['id']}/items/{line_item.id}/run",
        content=line_body,
        headers={"Authorization": f"Bearer {line_token}"},
    )
    assert refused.status_code == 400
    assert (
        "jobs of kind 'batch' do not run their items through this route"
        in (refused.json()["error"]["message"])
    )
