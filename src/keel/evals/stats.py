"""Paired comparisons of two runs on the same items: a bootstrap confidence interval on the
mean difference and an exact two-sided sign test. Seeded, so a gate on the same results
gives the same answer every time."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 4000
SEED = 20261206


@dataclass(frozen=True, slots=True)
class Difference:
    """candidate - baseline over the items both scored."""

    n: int
    mean: float
    low: float  # the confidence interval's bounds
    high: float
    confidence: float
    better: int  # items where the candidate scored higher
    worse: int
    p_value: float  # sign test, ties dropped

    def as_dict(self) -> dict[str, float | int]:
        return {"n": self.n, "mean": self.mean, "ci_low": self.low, "ci_high": self.high,
                "confidence": self.confidence, "better": self.better, "worse": self.worse,
                "p_value": self.p_value}  # fmt: skip


def sign_test(better: int, worse: int) -> float:
    """Two-sided exact binomial p-value of `better` vs `worse` under p = 1/2."""
    n = better + worse
    if n == 0:
        return 1.0
    k = min(better, worse)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return float(min(1.0, 2 * tail))


def paired(
    baseline: Sequence[float], candidate: Sequence[float], confidence: float = 0.95
) -> Difference:
    """The paired difference of two equal-length score lists (one entry per item)."""
    if len(baseline) != len(candidate):
        raise ValueError("paired scores need one value per item in each run")
    diffs = np.asarray(candidate, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    n = len(diffs)
    if n == 0:
        return Difference(0, 0.0, 0.0, 0.0, confidence, 0, 0, 1.0)
    mean = float(diffs.mean())
    if np.all(diffs == diffs[0]):  # no spread: every resample has the same mean
        low = high = mean
    else:
        rng = np.random.default_rng(SEED)
        picks = rng.integers(0, n, size=(RESAMPLES, n))
        means = diffs[picks].mean(axis=1)
        tail = (1 - confidence) / 2 * 100
        low, high = (float(x) for x in np.percentile(means, [tail, 100 - tail]))
    better, worse = int((diffs > 1e-12).sum()), int((diffs < -1e-12).sum())
    return Difference(n, mean, low, high, confidence, better, worse, sign_test(better, worse))
