"""The knowledge console page: bases, documents, chunks and the search playground."""

from __future__ import annotations

from keel.server.admin.knowledge import knowledge_service
from tests.knowledge.samples import MARKDOWN
from tests.ui.conftest import Console, login


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
