"""The jobs console page: every job of the project with its progress, and one job's events."""

from __future__ import annotations

from keel.server.openai.files import job_system
from tests.ui.conftest import Console, login


async def test_jobs_show_progress_and_events_and_only_the_projects_own(console: Console) -> None:
    store = job_system(console.services).store
    items = [(f"line-{i}", {"n": i}) for i in range(3)]
    mine = store.create("export", "default", "k1", {}, items)  # a kind no executor claims
    store.add_event(mine.id, "paused by the operator", level="warning")
    async with console.client() as client:
        admin = {"Authorization": f"Bearer {console.keys['admin']}"}
        created = await client.post("/api/projects", json={"name": "other"}, headers=admin)
        assert created.status_code in (200, 201), created.text
        theirs = store.create("export", "other", "k2", {}, items)
        await login(client, console.keys["viewer"])
        listing = await client.get("/ui/jobs")
        assert listing.status_code == 200
        assert f'href="/ui/jobs/{mine.id}"' in listing.text
        assert f'data-state="{mine.id}">queued<' in listing.text
        assert 'max="3" value="0" aria-label="0 of 3 items finished"' in listing.text
        assert theirs.id not in listing.text
        detail = await client.get(f"/ui/jobs/{mine.id}")
        assert detail.status_code == 200
        assert "created with 3 items" in detail.text
        assert "paused by the operator" in detail.text
        hidden = await client.get(f"/ui/jobs/{theirs.id}")
        assert hidden.status_code == 404
        assert "no job" in hidden.text
        bad = await client.get("/ui/jobs/not%20an%20id")
        assert bad.status_code == 400  # not an id: refused before any lookup
