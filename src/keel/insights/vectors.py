"""Nearest neighbours and neighbourhood smoothing of unit vectors, in blocks so that 20,000
vectors never need a 20,000 x 20,000 matrix at once."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]
BLOCK = 2048  # query rows per similarity block (2048 x 20,000 floats: 160 MB at most)


def unit(vectors: npt.NDArray[np.floating]) -> Vectors:
    """Rows scaled to length 1 (a zero row stays zero)."""
    array = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    result: Vectors = (array / np.maximum(norms, 1e-12)).astype(np.float32)
    return result


def nearest(
    queries: Vectors, reference: Vectors, k: int, *, exclude_self: bool = False
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
    """Indices and cosine similarities of each query's k nearest reference rows, best first.

    With `exclude_self`, queries are the reference itself and a row is not its own neighbour.
    """
    k = max(1, min(k, len(reference) - (1 if exclude_self else 0)))
    indices = np.empty((len(queries), k), dtype=np.intp)
    scores = np.empty((len(queries), k), dtype=np.float32)
    for start in range(0, len(queries), BLOCK):
        sims = queries[start : start + BLOCK] @ reference.T
        if exclude_self:
            rows = np.arange(sims.shape[0])
            sims[rows, rows + start] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top_sims = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_sims, axis=1)
        indices[start : start + BLOCK] = np.take_along_axis(top, order, axis=1)
        scores[start : start + BLOCK] = np.take_along_axis(top_sims, order, axis=1)
    return indices, scores


def smooth(vectors: Vectors, neighbours: int) -> Vectors:
    """Each vector averaged with its nearest neighbours, then made unit length again.

    Sentence embeddings of one intent scatter around it; averaging over a small neighbourhood
    pulls them together and measurably sharpens clusters and outlier scores
    (bench/insights_quality.py).
    """
    if neighbours <= 0 or len(vectors) < 2:
        return vectors
    indices, _ = nearest(vectors, vectors, neighbours, exclude_self=True)
    summed = vectors + vectors[indices].sum(axis=1)
    return unit(summed)
