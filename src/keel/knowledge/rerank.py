"""Reranking: a second look at the first ranking's best candidates before the top k are cut.

`Reranker` is the hook (one method, `rerank`); a cross-encoder would implement it, but none
ships with Keel, so the built-in one, `LexicalReranker`, needs no model: it blends each
candidate's fused score with how fully the chunk covers the query's terms and keeps their
order (adjacent query words adjacent in the chunk). Rerankers are opt-in per search.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Protocol

from keel.errors import InvalidRequest
from keel.knowledge.index import words
from keel.knowledge.records import SearchHit

CANDIDATES = 30  # how many of the first ranking a reranker sees (at least top_k)


class Reranker(Protocol):
    name: str

    def rerank(self, query: str, hits: list[SearchHit]) -> list[SearchHit]:
        """The same hits, best first, each with its new `score`."""
        ...


class LexicalReranker:
    """Fused score (rescaled over the candidates) blended with query-term coverage and
    query-bigram matches; `weight` is the lexical evidence's share."""

    name = "lexical"

    def __init__(self, weight: float = 0.3, bigram_share: float = 0.3):
        self.weight, self.bigram_share = weight, bigram_share

    def rerank(self, query: str, hits: list[SearchHit]) -> list[SearchHit]:
        terms = words(query)
        if not hits or not terms:
            return hits
        distinct = set(terms)
        bigrams = set(itertools.pairwise(terms))
        scores = [hit.score for hit in hits]
        low, span = min(scores), (max(scores) - min(scores)) or 1.0
        rescored = []
        for hit in hits:
            tokens = words(hit.text)
            coverage = len(distinct.intersection(tokens)) / len(distinct)
            pairs = set(itertools.pairwise(tokens))
            adjacency = len(bigrams & pairs) / len(bigrams) if bigrams else coverage
            lexical = (1 - self.bigram_share) * coverage + self.bigram_share * adjacency
            blended = (1 - self.weight) * (hit.score - low) / span + self.weight * lexical
            rescored.append(dataclasses.replace(hit, score=round(blended, 6)))
        return sorted(rescored, key=lambda hit: -hit.score)


RERANKERS: dict[str, Reranker] = {"lexical": LexicalReranker()}


def reranker(name: str | None) -> Reranker | None:
    """The named reranker (None: none); an unknown name is a 400 listing the known ones."""
    if name is None:
        return None
    found = RERANKERS.get(name)
    if found is None:
        raise InvalidRequest(
            f"unknown reranker {name!r} (known: {', '.join(sorted(RERANKERS))})", param="rerank"
        )
    return found
