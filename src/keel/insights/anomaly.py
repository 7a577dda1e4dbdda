"""Outlier scores: mean cosine distance from a request to its k nearest neighbours in a
reference window, the reference smoothed first (each vector averaged with its nearest
neighbours), which measurably separates out-of-scope requests better than raw neighbours
(bench/insights_quality.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from keel.insights.vectors import Vectors, nearest, smooth

NEIGHBOURS = 5
SMOOTHING = 10
# A score above this flags a request; chosen on dev rows for about 80 % recall of
# out-of-scope requests at a 2 % false-positive rate (docs/insights.md). Per project setting.
THRESHOLD = 0.53


@dataclass(frozen=True)
class Reference:
    vectors: Vectors  # smoothed

    @classmethod
    def build(cls, vectors: Vectors, smoothing: int = SMOOTHING) -> Reference:
        return cls(smooth(vectors, smoothing))

    def __len__(self) -> int:
        return len(self.vectors)

    def scores(
        self, queries: Vectors, k: int = NEIGHBOURS, *, exclude_self: bool = False
    ) -> npt.NDArray[np.float32]:
        """Each query's mean cosine distance to its k nearest reference vectors."""
        if len(queries) == 0 or len(self.vectors) == 0:
            return np.zeros(len(queries), dtype=np.float32)
        _, sims = nearest(queries, self.vectors, k, exclude_self=exclude_self)
        result: npt.NDArray[np.float32] = (1.0 - sims.mean(axis=1)).astype(np.float32)
        return result
