"""Topics: Ward clustering of smoothed embeddings, with the number of topics chosen by a
scale-free cut of the tree, and nearest-centroid assignment of everything else.

The cut: merging two Ward clusters costs height h; at k clusters of a window of n vectors,
h / sqrt(n / k) is that cost per member of a typical cluster. The tree is cut at the
largest k where it is still over `granularity` (chosen by cross-validation on CLINC150's dev
rows, never on the figure reported; see docs/insights.md). Ward's tree needs all pairwise
distances, so at most `max_fit` vectors build it; the rest join their nearest topic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from keel.insights.vectors import Vectors, nearest, smooth, unit

GRANULARITY = 0.58
SMOOTHING = 5
MAX_FIT = 5000  # vectors the tree is built from; Ward's memory is quadratic in it
Labels = npt.NDArray[np.intp]


@dataclass(frozen=True)
class Clustering:
    labels: Labels  # topic of each input vector, 0..k-1, largest topic first
    centroids: Vectors  # (k, dimension), unit length, in the raw embedding space
    fitted: int  # how many vectors built the tree (the rest were assigned)

    @property
    def count(self) -> int:
        return len(self.centroids)


def choose_k(heights: npt.NDArray[np.float64], n: int, granularity: float) -> int:
    """The number of clusters where merging stops paying: the largest k whose next merge
    costs more than `granularity` per member of a typical cluster.

    `heights[k - 2]` is the height of the merge that turns k clusters into k - 1. Scanning
    from the top of the tree would stop early: near the root, clusters are so large that the
    cost per member can dip under the cut before it rises again.
    """
    ks = np.arange(2, n + 1)
    if len(ks) == 0:
        return 1
    costs = heights[ks - 2] / np.sqrt(n / ks)
    above = ks[costs > granularity]
    return int(above.max()) if len(above) else 1


def _ward(vectors: Vectors, granularity: float, smoothing: int) -> Labels:
    from scipy.cluster.hierarchy import fcluster, linkage  # type: ignore[import-untyped]

    n = len(vectors)
    if n < 3:
        return np.zeros(n, dtype=np.intp)
    smoothed = smooth(vectors, smoothing)
    tree = linkage(smoothed.astype(np.float64), method="ward")
    heights = tree[::-1, 2]
    k = choose_k(heights, n, granularity)
    return np.asarray(fcluster(tree, k, criterion="maxclust"), dtype=np.intp) - 1


def centroids_of(vectors: Vectors, labels: Labels, count: int) -> Vectors:
    sums = np.zeros((count, vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, vectors)
    return unit(sums)


def assign(vectors: Vectors, centroids: Vectors) -> tuple[Labels, npt.NDArray[np.float32]]:
    """Each vector's nearest topic and its cosine similarity to it (incremental assignment)."""
    if len(vectors) == 0 or len(centroids) == 0:
        return np.zeros(len(vectors), dtype=np.intp), np.zeros(len(vectors), dtype=np.float32)
    indices, scores = nearest(vectors, centroids, 1)
    return indices[:, 0], scores[:, 0]


def cluster(
    vectors: Vectors,
    *,
    granularity: float = GRANULARITY,
    smoothing: int = SMOOTHING,
    max_fit: int = MAX_FIT,
    seed: int = 0,
) -> Clustering:
    """Topics of a window of unit vectors; `max_fit` of them (an even sample) build the tree."""
    n = len(vectors)
    if n == 0:
        return Clustering(
            np.zeros(0, dtype=np.intp), np.zeros((0, vectors.shape[1]), dtype=np.float32), 0
        )
    if n <= max_fit:
        fit_rows = np.arange(n)
    else:
        fit_rows = np.sort(np.random.default_rng(seed).choice(n, max_fit, replace=False))
    fit_labels = _ward(vectors[fit_rows], granularity, smoothing)
    count = int(fit_labels.max()) + 1
    centroids = centroids_of(vectors[fit_rows], fit_labels, count)
    labels = np.empty(n, dtype=np.intp)
    labels[fit_rows] = fit_labels
    if n > len(fit_rows):
        rest = np.setdiff1d(np.arange(n), fit_rows)
        labels[rest] = assign(vectors[rest], centroids)[0]
    # Number topics by size, largest first, so "topic 0" means the biggest everywhere.
    sizes = np.bincount(labels, minlength=count)
    order = np.argsort(-sizes, kind="stable")
    rank = np.empty(count, dtype=np.intp)
    rank[order] = np.arange(count)
    return Clustering(rank[labels], centroids[order], len(fit_rows))
