import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

from keel.errors import InvalidRequest, NotFound
from keel.events import LocalChangeBus
from keel.knowledge.parse import DocumentError
from keel.knowledge.service import KnowledgeBases
from keel.knowledge.tables import KnowledgeChunkRow, KnowledgeEmbeddingRow
from tests.knowledge.samples import HTML, MARKDOWN, pdf_bytes

P = "default"


async def _handbook(kbs: KnowledgeBases) -> None:
    kbs.create(P, "handbook", actor="test")
    await kbs.ingest(P, "handbook", "handbook.md", MARKDOWN, actor="test")
    await kbs.ingest(P, "handbook", "policy.html", HTML, actor="test")
    report = pdf_bytes(["The cafeteria opens at 8 am.", "Lunch is served until 2 pm."])
    await kbs.ingest(P, "handbook", "cafeteria.pdf", report, actor="test")


@pytest.mark.parametrize("mode", ["hybrid", "dense", "lexical"])
async def test_search_finds_the_chunk_that_answers(kbs: KnowledgeBases, mode: str) -> None:
    await _handbook(kbs)
    hits = await kbs.search(P, "handbook", "how many days of paid holiday do I get?", 3, mode=mode)  # type: ignore[arg-type]
    assert hits[0].source == "handbook.md"
    assert hits[0].heading_path == ["Handbook", "Holidays"]
    highlighted = MARKDOWN.decode()[hits[0].highlight_start : hits[0].highlight_end]
    assert "28 days of paid holiday" in highlighted


async def test_unchanged_documents_cost_no_embedding_and_changed_ones_are_replaced(
    kbs: KnowledgeBases, database: object
) -> None:
    await _handbook(kbs)
    again = await kbs.ingest(P, "handbook", "handbook.md", MARKDOWN, actor="test")
    assert [r.status for r in again] == ["unchanged"]
    assert again[0].version == 1
    changed = MARKDOWN.replace(b"28 days", b"30 days")
    [result] = await kbs.ingest(P, "handbook", "handbook.md", changed, actor="test")
    assert (result.status, result.version) == ("updated", 2)
    hits = await kbs.search(P, "handbook", "days of paid holiday", 1)
    assert "30 days" in hits[0].text
    with kbs.database.session() as session:  # no chunk or vector of version 1 is left
        texts = session.scalars(select(KnowledgeChunkRow.text)).all()
        assert not any("28 days" in text for text in texts)
        vectors = session.scalar(select(func.count()).select_from(KnowledgeEmbeddingRow))
        assert vectors == len(texts)


async def test_a_warm_search_reads_no_store_and_a_deleted_document_leaves_it(
    kbs: KnowledgeBases,
) -> None:
    await _handbook(kbs)
    [doc] = kbs.documents(P, "handbook", source="cafeteria.pdf")[0]
    first = await kbs.search(P, "handbook", "when does the cafeteria open", 3)
    assert first[0].source == "cafeteria.pdf"
    statements = _statements(kbs)
    assert await kbs.search(P, "handbook", "when does the cafeteria open", 3) == first
    assert statements == []  # the base's row and the chunks' text come from memory
    kbs.delete_document(P, "handbook", doc.id, actor="test")
    hits = await kbs.search(P, "handbook", "when does the cafeteria open", 5)
    assert all(hit.source != "cafeteria.pdf" for hit in hits)


async def test_metadata_filters_restrict_the_results(kbs: KnowledgeBases) -> None:
    kbs.create(P, "docs", actor="test")
    rows = [
        {"id": "a", "text": "Refunds are paid within 14 days.", "team": "billing"},
        {"id": "b", "text": "Refunds of shipping costs are not possible.", "team": "shipping"},
    ]
    data = "\n".join(json.dumps(row) for row in rows).encode()
    await kbs.ingest(P, "docs", "faq.jsonl", data, actor="test")
    hits = await kbs.search(P, "docs", "refunds", 5, filters={"team": "shipping"})
    assert [hit.source for hit in hits] == ["faq.jsonl#b"]
    hits = await kbs.search(P, "docs", "refunds", 5, filters={"team": {"$in": ["billing"]}})
    assert [hit.source for hit in hits] == ["faq.jsonl#a"]
    with pytest.raises(InvalidRequest, match=r"\$in takes a list"):
        await kbs.search(P, "docs", "refunds", 5, filters={"team": {"$in": "billing"}})


async def test_a_bad_file_stores_nothing(kbs: KnowledgeBases) -> None:
    kbs.create(P, "handbook", actor="test")
    with pytest.raises(DocumentError, match="not a PDF"):
        await kbs.ingest(P, "handbook", "fake.pdf", b"hello", actor="test")
    assert kbs.get(P, "handbook").documents == 0
    with pytest.raises(NotFound, match="unknown knowledge base 'nope'"):
        await kbs.ingest(P, "nope", "a.txt", b"text", actor="test")


async def test_the_index_is_rebuilt_from_the_store_when_its_files_are_gone(
    kbs: KnowledgeBases, tmp_path: Path
) -> None:
    await _handbook(kbs)
    before = await kbs.search(P, "handbook", "password manager", 3)
    kb_id = kbs.get(P, "handbook").id
    assert (kbs.folder / kb_id / "manifest.json").exists()
    fresh = KnowledgeBases(kbs.database, tmp_path / "other", kbs._embedder, kbs._count_tokens)
    after = await fresh.search(P, "handbook", "password manager", 3)
    assert [h.chunk_id for h in after] == [h.chunk_id for h in before]
    assert before[0].source == "policy.html"


async def test_deleting_a_base_removes_its_index_files(kbs: KnowledgeBases) -> None:
    await _handbook(kbs)
    await kbs.search(P, "handbook", "holidays", 1)
    kb_id = kbs.get(P, "handbook").id
    kbs.delete(P, "handbook", actor="test")
    assert not (kbs.folder / kb_id).exists()
    assert kbs.list_bases(P) == []


async def test_vectors_of_two_models_are_never_mixed(kbs: KnowledgeBases) -> None:
    from tests.support.app import HashEmbedder

    kbs.create(P, "handbook", actor="test")  # embedded with MiniLM
    other = KnowledgeBases(kbs.database, kbs.folder.parent, HashEmbedder, kbs._count_tokens)
    with pytest.raises(InvalidRequest, match="vectors of two models are never mixed"):
        await other.ingest(P, "handbook", "a.txt", b"Some text.", actor="test")
    with pytest.raises(InvalidRequest, match="search it with mode 'lexical'"):
        await other.search(P, "handbook", "text", 3)
    assert await other.search(P, "handbook", "text", 3, mode="lexical") == []


def _statements(kbs: KnowledgeBases) -> list[str]:
    """Every SQL statement the store runs from now on."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(str(args[2]))

    event.listen(kbs.database.engine, "before_cursor_execute", record)
    return seen


async def test_a_change_on_another_replica_reaches_this_ones_searches(
    kbs: KnowledgeBases, tmp_path: Path
) -> None:
    bus = LocalChangeBus()  # what the Redis bus delivers to every replica
    here = KnowledgeBases(kbs.database, tmp_path / "here", kbs._embedder, kbs._count_tokens,
                          events=bus)  # fmt: skip
    there = KnowledgeBases(kbs.database, tmp_path / "there", kbs._embedder, kbs._count_tokens,
                           events=bus)  # fmt: skip
    there.create(P, "handbook", actor="test")
    await there.ingest(P, "handbook", "handbook.md", MARKDOWN, actor="test")
    assert (await here.search(P, "handbook", "reimbursed receipt", 1))[0].source == "handbook.md"
    reads = here.store_reads
    notes = b"Expenses are reimbursed within 14 days of the receipt being uploaded."
    await there.ingest(P, "handbook", "notes.txt", notes, actor="test")
    assert (await here.search(P, "handbook", "reimbursed receipt", 1))[0].source == "notes.txt"
    assert here.store_reads == reads + 1  # read again once, after the change, not each time
    await here.search(P, "handbook", "reimbursed receipt", 1)
    assert here.store_reads == reads + 1
    there.delete(P, "handbook", actor="test")
    with pytest.raises(NotFound, match="unknown knowledge base 'handbook'"):
        await here.search(P, "handbook", "reimbursed receipt", 1)
