"""The knowledge console page: bases, documents, chunks and the search playground."""

from __future__ import annotations

from keel.server.admin.knowledge import knowledge_service
from keel.server.openai.files import job_system
from tests.knowledge.samples import MARKDOWN
from tests.ui.conftest import Console, login, post_form


async def test_a_base_its_documents_and_a_search_with_the_highlighted_sentence(
    console: Console,
) -> None:
    kbs = knowledge_service(console.services)
    kbs.create("default", "handbook", actor="test")
    await kbs.ingest("default", "handbook", "handbook.md", MARKDOWN, actor="test")
    async with console.client() as client:
        await login(client, console.keys["viewer"])
        listing = await client.get("/ui/kbs")
        assert listing.status_code == 200
        assert 'href="/ui/kbs/handbook"' in listing.text
        found = await client.get(
            "/ui/kbs/handbook", params={"q": "paid holiday days", "mode": "lexical"}
        )
        assert found.status_code == 200
        assert "<mark>Everyone gets 28 days of paid holiday a year.</mark>" in found.text
        assert "handbook.md" in found.text
        missing = await client.get("/ui/kbs/nope")
        assert missing.status_code == 404
        assert "unknown knowledge base" in missing.text


async def test_a_question_is_answered_from_the_base_with_its_citations(console: Console) -> None:
    kbs = knowledge_service(console.services)
    kbs.create("default", "handbook", actor="test")
    await kbs.ingest("default", "handbook", "handbook.md", MARKDOWN, actor="test")
    system = job_system(console.services)
    staged = system.files.create("default", "k", "knowledge", "notes.txt", b"Parking.", 1)
    items = [("notes.txt", {"file_id": staged.id, "metadata": None})]
    job = system.store.create("kb.ingest", "default", "k", {"kb": "handbook"}, items)
    async with console.client() as client:
        await login(client, console.keys["developer"])
        shown = await client.get("/ui/kbs/handbook")
        assert shown.status_code == 200, shown.text
        assert f'href="/ui/jobs/{job.id}"' in shown.text  # the base's ingestion job
        assert "0/1" in shown.text
        answered = await post_form(client, "/ui/kbs/handbook", "/ui/kbs/handbook/ask",
                                   {"question": "How many days of paid holiday?",
                                    "model": "fake-model"})  # fmt: skip
        assert answered.status_code == 200, answered.text
        assert "Hello from the fake upstream." in answered.text
        assert "[1] Handbook" in answered.text
        assert "handbook.md" in answered.text
        assert 'id="trace-link"' in answered.text
        refused = await post_form(client, "/ui/kbs/handbook", "/ui/kbs/nope/ask",
                                  {"question": "x", "model": "fake-model"})  # fmt: skip
        assert refused.status_code == 200
        assert "unknown knowledge base &#39;nope&#39;" in refused.text
    async with console.client() as viewer:
        await login(viewer, console.keys["viewer"])
        page = await viewer.get("/ui/kbs/handbook")
        assert 'id="ask"' not in page.text  # a viewer may not call models
