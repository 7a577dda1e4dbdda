"""Hybrid ranking: dense and lexical scores of the same chunks fused into one order.

The default is a weighted sum of each list's scores rescaled to [0, 1] over its own top
candidates (convex combination), which kept more of each retriever's confidence than
reciprocal rank fusion on the dev queries (docs/knowledge.md); RRF stays available.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from keel.knowledge.index import top_k

if TYPE_CHECKING:
    import numpy.typing as npt

    Floats = npt.NDArray[np.float32]
    Ints = npt.NDArray[np.int64]
    Mask = npt.NDArray[np.bool_]

Method = Literal["convex", "rrf"]


@dataclass(frozen=True)
class Fusion:
    method: Method = "convex"
    dense_weight: float = 0.5  # the lexical list gets 1 - dense_weight
    rrf_k: int = 60
    depth: int = 300  # candidates taken from each list
    # Pseudo-relevance feedback: the query vector moves toward the mean of the first
    # fused ranking's top `feedback` chunks (Rocchio), then both lists are fused again.
    feedback: int = 0
    feedback_weight: float = 0.5
    # A chunk's score mixes in its document's: the same convex sum over the best dense and
    # the best lexical chunk of that document, which may be two different chunks (a title
    # that matches the words, a paragraph that matches the meaning). 0: chunks alone.
    document_weight: float = 0.0


def _rescaled(scores: Floats, positions: Ints) -> dict[int, float]:
    if positions.size == 0:
        return {}
    values = scores[positions].astype(np.float64)
    low, high = float(values.min()), float(values.max())
    span = high - low
    if span <= 1e-12:
        return {int(p): 1.0 for p in positions}
    return {int(p): (float(v) - low) / span for p, v in zip(positions, values, strict=True)}


def fuse(
    dense: Floats,
    lexical: Floats,
    fusion: Fusion,
    k: int,
    mask: Mask | None = None,
    groups: Ints | None = None,
) -> tuple[Ints, Floats]:
    """Top `k` positions of the fused ranking of two full score arrays.

    A position missing from one list's candidates counts 0 there (convex) or nothing (RRF).
    `groups` (each position's document number) lets `fusion.document_weight` apply.
    """
    if mask is not None:
        dense = np.where(mask, dense, -np.inf).astype(np.float32)
        lexical = np.where(mask, lexical, -np.inf).astype(np.float32)
    dense_top, _ = top_k(dense, fusion.depth)
    lexical_top, _ = top_k(lexical, fusion.depth)
    lexical_top = lexical_top[lexical[lexical_top] > 0]  # no shared word: no lexical vote
    fused: dict[int, float] = {}
    if fusion.method == "rrf":
        for weight, ranked in (
            (fusion.dense_weight, dense_top),
            (1 - fusion.dense_weight, lexical_top),
        ):
            for rank, position in enumerate(ranked):
                fused[int(position)] = fused.get(int(position), 0.0) + weight / (
                    fusion.rrf_k + rank + 1
                )
    else:
        parts = (
            (fusion.dense_weight, _rescaled(dense, dense_top)),
            (1 - fusion.dense_weight, _rescaled(lexical, lexical_top)),
        )
        for weight, part in parts:
            for position, value in part.items():
                fused[position] = fused.get(position, 0.0) + weight * value
        if groups is not None and fusion.document_weight > 0:
            fused = _with_documents(fused, parts, groups, fusion.document_weight)
    if not fused:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    positions = np.fromiter(fused.keys(), dtype=np.int64, count=len(fused))
    values = np.fromiter(fused.values(), dtype=np.float32, count=len(fused))
    order, best = top_k(values, k)
    return positions[order], best


def _with_documents(
    fused: dict[int, float],
    parts: tuple[tuple[float, dict[int, float]], ...],
    groups: Ints,
    share: float,
) -> dict[int, float]:
    """Each chunk's fused score blended with its document's: the weighted best rescaled
    score of each list over the document's candidate chunks."""
    document: dict[int, float] = {}
    for weight, part in parts:
        best: dict[int, float] = {}
        for position, value in part.items():
            group = int(groups[position])
            if value > best.get(group, -1.0):
                best[group] = value
        for group, value in best.items():
            document[group] = document.get(group, 0.0) + weight * value
    return {
        position: (1 - share) * value + share * document[int(groups[position])]
        for position, value in fused.items()
    }


def hybrid(
    query_vector: Floats,
    vectors: Floats,
    lexical: Floats,
    fusion: Fusion,
    k: int,
    mask: Mask | None = None,
    groups: Ints | None = None,
) -> tuple[Ints, Floats, Floats]:
    """Fused top `k` (positions, scores) and the dense scores used, with feedback if set.
    `groups`: each position's document number (see Fusion.document_weight)."""
    dense = np.asarray(vectors @ query_vector, dtype=np.float32)
    positions, scores = fuse(dense, lexical, fusion, max(k, fusion.feedback), mask, groups)
    if fusion.feedback > 0 and positions.size:
        centroid = vectors[positions[: fusion.feedback]].mean(axis=0)
        moved = query_vector + fusion.feedback_weight * centroid
        moved = moved / max(float(np.linalg.norm(moved)), 1e-6)
        dense = np.asarray(vectors @ moved, dtype=np.float32)
        positions, scores = fuse(dense, lexical, fusion, k, mask, groups)
    return positions[:k], scores[:k], dense
