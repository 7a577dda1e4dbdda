"""A vector index for one semantic bucket: exact search while small, HNSW once large.

Below `hnsw_from` vectors a flat float32 matrix is searched exactly (a few hundred
microseconds at most); past it the bucket moves to a usearch HNSW graph, which keeps a
search of 100,000 vectors under a millisecond (bench/cache_latency.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

HNSW_FROM = 4096
_EXPANSION_SEARCH = 96  # HNSW beam width: recall against speed (measured in docs/cache.md)


class VectorIndex:
    """Unit vectors keyed by entry id; similarity is the dot product (cosine)."""

    def __init__(self, dimension: int, hnsw_from: int = HNSW_FROM):
        self.dimension = dimension
        self._hnsw_from = hnsw_from
        self._keys: dict[str, int] = {}  # entry id → integer label
        self._ids: dict[int, str] = {}
        self._next_label = 0
        # Flat storage: row r holds the vector of label _row_labels[r].
        self._matrix = np.zeros((16, dimension), dtype=np.float32)
        self._row_labels: list[int] = []
        self._rows: dict[int, int] = {}  # label → row
        self._hnsw: Any = None

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, entry_id: str) -> bool:
        return entry_id in self._keys

    def add(self, entry_id: str, vector: npt.NDArray[np.float32]) -> None:
        if vector.shape != (self.dimension,):
            raise ValueError(f"vector of shape {vector.shape}; this index holds {self.dimension}")
        self.remove(entry_id)
        label = self._next_label
        self._next_label += 1
        self._keys[entry_id], self._ids[label] = label, entry_id
        if self._hnsw is not None:
            self._hnsw.add(label, vector)
            return
        row = len(self._row_labels)
        if row == len(self._matrix):
            grown = np.zeros((2 * row, self.dimension), dtype=np.float32)
            grown[:row] = self._matrix
            self._matrix = grown
        self._matrix[row] = vector
        self._row_labels.append(label)
        self._rows[label] = row
        if len(self._row_labels) >= self._hnsw_from:
            self._build_hnsw()

    def add_many(self, entry_ids: list[str], vectors: npt.NDArray[np.float32]) -> None:
        """Add a batch: one call into the HNSW graph (its threads build it in parallel)."""
        if self._hnsw is None or len(entry_ids) < 2:
            for entry_id, vector in zip(entry_ids, vectors, strict=True):
                self.add(entry_id, vector)
            return
        for entry_id in entry_ids:
            self.remove(entry_id)
        labels = np.arange(self._next_label, self._next_label + len(entry_ids), dtype=np.uint64)
        self._next_label += len(entry_ids)
        for entry_id, label in zip(entry_ids, labels.tolist(), strict=True):
            self._keys[entry_id], self._ids[label] = label, entry_id
        self._hnsw.add(labels, vectors)

    def remove(self, entry_id: str) -> None:
        label = self._keys.pop(entry_id, None)
        if label is None:
            return
        del self._ids[label]
        if self._hnsw is not None:
            self._hnsw.remove(label)
            return
        row, last = self._rows.pop(label), len(self._row_labels) - 1
        if row != last:  # move the last row into the hole
            moved = self._row_labels[last]
            self._matrix[row] = self._matrix[last]
            self._row_labels[row] = moved
            self._rows[moved] = row
        self._row_labels.pop()

    def search(
        self, vector: npt.NDArray[np.float32], count: int, min_similarity: float
    ) -> list[tuple[str, float]]:
        """Up to `count` (entry id, similarity ≥ min_similarity), most similar first."""
        if not self._keys:
            return []
        if self._hnsw is not None:
            matches = self._hnsw.search(vector, count)
            found = [
                (self._ids[int(label)], 1.0 - float(distance))
                for label, distance in zip(matches.keys, matches.distances, strict=True)
                if int(label) in self._ids
            ]
        else:
            size = len(self._row_labels)
            scores = self._matrix[:size] @ vector
            top = np.argsort(-scores)[:count] if size > count else np.argsort(-scores)
            found = [(self._ids[self._row_labels[r]], float(scores[r])) for r in top]
        return [(entry_id, score) for entry_id, score in found if score >= min_similarity]

    def _build_hnsw(self) -> None:
        from usearch.index import Index  # loaded only for buckets this large

        index = Index(
            ndim=self.dimension,
            metric="ip",  # vectors are unit length: inner product is cosine
            dtype="f32",
            connectivity=16,
            expansion_add=128,
            expansion_search=_EXPANSION_SEARCH,
        )
        size = len(self._row_labels)
        index.add(np.asarray(self._row_labels, dtype=np.uint64), self._matrix[:size])
        self._hnsw = index
        self._matrix = np.zeros((0, self.dimension), dtype=np.float32)
        self._row_labels, self._rows = [], {}
