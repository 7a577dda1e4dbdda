"""/api/jobs: the project's jobs with progress and events; viewers read, only writers cancel;
job counts on /metrics."""

from __future__ import annotations

import asyncio

import httpx

from keel.server.openai.files import job_system

Gateway = tuple[httpx.AsyncClient, str]


def services_of(client: httpx.AsyncClient) -> object:
    return client._transport.app.state.services  # type: ignore[attr-defined]


async def test_a_job_is_listed_shown_and_cancelled_while_queued(gateway: Gateway) -> None:
    client, key = gateway
    admin = {"Authorization": f"Bearer {key}"}
    store = job_system(services_of(client)).store  # type: ignore[arg-type]
    job = store.create(
        "batch", "default", "k", {"endpoint": "/v1/chat/completions"}, [("a", {}), ("b", {})]
    )
    listed = (await client.get("/api/jobs", headers=admin)).json()
    assert [j["id"] for j in listed["data"]] == [job.id]
    assert listed["data"][0]["progress"] == {
        "done": 0,
        "failed": 0,
        "total": 2,
        "rate": None,
        "eta_seconds": None,
    }
    shown = (await client.get(f"/api/jobs/{job.id}", headers=admin)).json()
    assert shown["items"] == {"queued": 2}
    assert [e["message"] for e in shown["events"]] == ["created with 2 items"]
    cancelled = await client.post(f"/api/jobs/{job.id}/cancel", headers=admin)
    assert cancelled.json()["state"] == "cancelled"
    missing = await client.get("/api/jobs/batch_nope", headers=admin)
    assert missing.status_code == 404
    assert "GET /api/jobs" in missing.json()["error"]["message"]


async def test_a_viewer_reads_jobs_but_may_not_cancel_them(gateway: Gateway) -> None:
    client, _ = gateway
    services = services_of(client)
    _, viewer = services.keys.create_key(project_id="default", role="viewer", name="v")  # type: ignore[attr-defined]
    job = job_system(services).store.create("batch", "default", "k", {}, [("a", {})])  # type: ignore[arg-type]
    headers = {"Authorization": f"Bearer {viewer}"}
    assert (await client.get(f"/api/jobs/{job.id}", headers=headers)).status_code == 200
    refused = await client.post(f"/api/jobs/{job.id}/cancel", headers=headers)
    assert refused.status_code == 403


async def test_metrics_count_jobs_by_state(gateway: Gateway) -> None:
    client, key = gateway
    system = job_system(services_of(client))  # type: ignore[arg-type]
    system.store.create("batch", "default", "k", {}, [("a", {})])
    system.store.request_cancel(system.store.page()[0][0].id)  # ends it: nothing runs
    await system.start()  # counts jobs by state at once, then every few seconds
    try:
        for _ in range(1000):  # the first count, read in a thread
            if system.counts.states:
                break
            await asyncio.sleep(0.01)
        text = (await client.get("/metrics", headers={"Authorization": f"Bearer {key}"})).text
    finally:
        await system.stop()
    assert 'keel_jobs{state="cancelled"} 1.0' in text
    assert 'keel_jobs{state="queued"} 0.0' in text
    assert 'keel_job_items_total{outcome="ok"} 0.0' in text
