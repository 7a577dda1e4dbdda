"""Drift: the topic mix of a recent window against a reference window, by Pearson's
chi-square test of homogeneity (2 x k contingency table), at two grains: the topics
themselves and groups of neighbouring topics (the Ward tree of their centroids cut into
about sqrt(k) groups), which catches a shift spread over many topics of one area sooner.
Categories expected under 5 times are pooled so the chi-square approximation holds; the two
tests share the false-alarm budget `alpha` (Bonferroni)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from keel.insights.vectors import Vectors

ALPHA = 1e-4  # per comparison; bench/insights_quality.py: no false alarm in 20,000 requests
MIN_EXPECTED = 5.0

Counts = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Test:
    grain: str  # topics | groups
    statistic: float
    dof: int
    p_value: float


@dataclass(frozen=True)
class Drift:
    shifted: bool
    alpha: float
    tests: tuple[Test, ...]
    # Topics whose share moved most: (topic, reference share, recent share)
    movers: list[tuple[int, float, float]] = field(default_factory=list)

    @property
    def p_value(self) -> float:
        return min((t.p_value for t in self.tests), default=1.0)


def homogeneity(reference: Counts, recent: Counts) -> tuple[float, int, float]:
    """Chi-square statistic, degrees of freedom and p-value of two count vectors."""
    from scipy.stats import chi2  # type: ignore[import-untyped]

    table = np.vstack([reference, recent]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or table[0].sum() == 0 or table[1].sum() == 0:
        return 0.0, 0, 1.0
    total = table.sum()
    expected_min = table.sum(axis=0) * table.sum(axis=1).min() / total
    rare = expected_min < MIN_EXPECTED
    if rare.any():
        pooled = table[:, rare].sum(axis=1, keepdims=True)
        table = np.hstack([table[:, ~rare], pooled]) if rare.sum() < len(rare) else pooled
        if table.shape[1] < 2:
            return 0.0, 0, 1.0
    rows = table.sum(axis=1, keepdims=True)
    cols = table.sum(axis=0, keepdims=True)
    expected = rows @ cols / table.sum()
    statistic = float(((table - expected) ** 2 / expected).sum())
    dof = table.shape[1] - 1
    return statistic, dof, float(chi2.sf(statistic, dof))


def groups_of(centroids: Vectors) -> npt.NDArray[np.intp]:
    """The group of each topic: Ward's tree of the centroids cut into ~sqrt(k) groups."""
    from scipy.cluster.hierarchy import fcluster, linkage  # type: ignore[import-untyped]

    count = len(centroids)
    if count < 4:
        return np.arange(count, dtype=np.intp)
    tree = linkage(centroids.astype(np.float64), method="ward")
    groups = max(2, round(np.sqrt(count)))
    return np.asarray(fcluster(tree, groups, criterion="maxclust"), dtype=np.intp) - 1


def compare(
    reference: npt.NDArray[np.intp],
    recent: npt.NDArray[np.intp],
    topics: int,
    groups: npt.NDArray[np.intp] | None = None,
    *,
    alpha: float = ALPHA,
) -> Drift:
    """Compare the topic labels of two windows (and, with `groups`, their topic groups)."""
    ref_counts = np.bincount(reference, minlength=topics).astype(np.int64)
    new_counts = np.bincount(recent, minlength=topics).astype(np.int64)
    tests = [Test("topics", *homogeneity(ref_counts, new_counts))]
    if groups is not None and len(groups) == topics:
        count = int(groups.max()) + 1 if len(groups) else 0
        ref_groups = np.bincount(groups[reference], minlength=count).astype(np.int64)
        new_groups = np.bincount(groups[recent], minlength=count).astype(np.int64)
        tests.append(Test("groups", *homogeneity(ref_groups, new_groups)))
    budget = alpha / len(tests)
    shifted = any(t.dof > 0 and t.p_value < budget for t in tests)
    ref_share = ref_counts / max(1, ref_counts.sum())
    new_share = new_counts / max(1, new_counts.sum())
    order = np.argsort(-np.abs(new_share - ref_share))[:5]
    movers = [
        (int(t), float(ref_share[t]), float(new_share[t]))
        for t in order
        if ref_share[t] != new_share[t]
    ]
    return Drift(shifted, alpha, tuple(tests), movers)
