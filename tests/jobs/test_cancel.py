"""Cancelling a job through /api/jobs/{id}/cancel: a developer may (they create batches), a
viewer may not, and a cancelled batch ends with none of its lines sent."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from keel.server.app import create_app
from tests.support.app import build_services


async def test_a_developer_cancels_a_batch_and_a_viewer_may_not(tmp_path: Path) -> None:
    # run_jobs off: the batch stays queued, so the cancel meets it before any line runs.
    services, _ = build_services(tmp_path, "http://127.0.0.1:9/v1", run_jobs=False)
    project = services.keys.ensure_project()
    developer = services.keys.create_key(project_id=project, role="developer", name="dev")[1]
    viewer = services.keys.create_key(project_id=project, role="viewer", name="viewer")[1]
    app = create_app(services.settings, services=services)
    messages = [{"role": "user", "content": "hi"}]
    line = {"custom_id": "a", "url": "/v1/chat/completions",
            "body": {"model": "fake-model", "messages": messages}}  # fmt: skip
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://keel") as client:
        as_dev = {"Authorization": f"Bearer {developer}"}
        uploaded = await client.post(
            "/v1/files",
            headers=as_dev,
            files={"file": ("a.jsonl", json.dumps(line).encode())},
            data={"purpose": "batch"},
        )
        assert uploaded.status_code == 200, uploaded.text
        batch = await client.post(
            "/v1/batches",
            headers=as_dev,
            json={"input_file_id": uploaded.json()["id"], "endpoint": "/v1/chat/completions",
                  "completion_window": "24h"},
        )  # fmt: skip
        assert batch.status_code == 200, batch.text
        job_id = batch.json()["id"]

        refused = await client.post(
            f"/api/jobs/{job_id}/cancel", headers={"Authorization": f"Bearer {viewer}"}
        )
        assert refused.status_code == 403
        assert "may not jobs:write" in refused.json()["error"]["message"]

        cancelled = await client.post(f"/api/jobs/{job_id}/cancel", headers=as_dev)
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["state"] == "cancelled"
        shown = await client.get(f"/api/jobs/{job_id}", headers=as_dev)
    assert shown.json()["items"].get("cancelled") == 1
    assert shown.json()["progress"]["done"] == 0
