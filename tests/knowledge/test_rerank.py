"""The reranking hook: the lexical reranker, unknown names, and a reranked search."""

from __future__ import annotations

import pytest

from keel.errors import InvalidRequest
from keel.knowledge.rag import parse_request
from keel.knowledge.rerank import LexicalReranker, reranker
from keel.knowledge.service import KnowledgeBases, SearchHit
from tests.knowledge.samples import MARKDOWN


def _hit(chunk_id: int, text: str, score: float) -> SearchHit:
    return SearchHit(chunk_id, "doc", "a.md", text, 0, len(text), [], {}, score, score, 0.0,
                     0, len(text))  # fmt: skip


def test_a_chunk_holding_the_whole_phrase_moves_above_a_slightly_better_fused_score() -> None:
    hits = [
        _hit(1, "Holiday requests go to your manager.", 0.80),
        _hit(2, "Every employee gets paid holiday: 28 days a year.", 0.78),
        _hit(3, "The canteen opens at noon.", 0.10),
    ]
    ranked = LexicalReranker().rerank("paid holiday days a year", hits)
    assert [hit.chunk_id for hit in ranked] == [2, 1, 3]
    assert ranked[0].score > ranked[1].score > ranked[2].score
    assert LexicalReranker().rerank("the a of", hits) == hits  # no query terms: as it was


def test_an_unknown_reranker_is_a_400_naming_the_known_ones() -> None:
    assert reranker(None) is None
    with pytest.raises(InvalidRequest, match=r"unknown reranker 'cross' \(known: lexical\)"):
        reranker("cross")
    with pytest.raises(InvalidRequest, match=r"kb\.rerank is one of lexical"):
        parse_request({"name": "handbook", "rerank": "cross"})
    assert parse_request({"name": "handbook", "rerank": "lexical"}).rerank == "lexical"


async def test_a_reranked_search_keeps_top_k_best_first(kbs: KnowledgeBases) -> None:
    kbs.create("default", "handbook", actor="test")
    await kbs.ingest("default", "handbook", "handbook.md", MARKDOWN, actor="test")
    plain = await kbs.search("default", "handbook", "paid holiday", 2)
    reranked = await kbs.search("default", "handbook", "paid holiday", 2, rerank="lexical")
    assert len(reranked) == len(plain) == 2
    assert "28 days" in reranked[0].text
    assert reranked[0].score >= reranked[1].score
