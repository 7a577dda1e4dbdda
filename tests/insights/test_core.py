"""The insight algorithms on synthetic embeddings: topics found without being told how
many, outliers scored above their neighbours, a shifted mix flagged and an even one not."""

from __future__ import annotations

import numpy as np

from keel.insights import drift
from keel.insights.anomaly import Reference
from keel.insights.labels import top_terms
from keel.insights.topics import assign, cluster
from keel.insights.vectors import unit


def blobs(count: int, per: int, spread: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(count, 64)))
    truth = np.repeat(np.arange(count), per)
    return unit(centres[truth] + rng.normal(0, spread, (len(truth), 64))), truth


def test_topics_found_without_their_number() -> None:
    vectors, truth = blobs(12, 40, 0.08)
    found = cluster(vectors)
    assert found.count == 12
    # Every topic is one blob: the labels are the truth renamed.
    pairs = set(zip(found.labels.tolist(), truth.tolist(), strict=True))
    assert len(pairs) == 12
    assert np.bincount(found.labels)[0] == max(np.bincount(found.labels))


def test_topics_of_a_large_window_fit_a_sample_and_assign_the_rest() -> None:
    vectors, truth = blobs(8, 400, 0.08)
    found = cluster(vectors, max_fit=600)
    assert found.fitted == 600
    assert len(set(zip(found.labels.tolist(), truth.tolist(), strict=True))) == 8
    labels, similarity = assign(vectors[:5], found.centroids)
    assert (labels == found.labels[:5]).all()
    assert (similarity > 0.5).all()


def test_empty_and_tiny_windows_give_no_or_one_topic() -> None:
    assert cluster(np.zeros((0, 8), dtype=np.float32)).count == 0
    assert cluster(unit(np.ones((2, 8)))).count == 1


def test_labels_name_what_sets_a_topic_apart() -> None:
    texts = [
        "reset my password please",
        "i forgot my password",
        "password reset link",
        "what is the weather today",
        "weather forecast for tomorrow",
        "is the weather nice",
    ]
    terms = top_terms(texts, [0, 0, 0, 1, 1, 1], 2)
    assert terms[0][0].startswith("password")
    assert terms[1][0].startswith("weather")


def test_an_outlier_scores_above_the_reference() -> None:
    vectors, _ = blobs(5, 50, 0.08)
    reference = Reference.build(vectors)
    inside = reference.scores(vectors[:10])
    outside = reference.scores(unit(np.random.default_rng(9).normal(size=(10, 64))))
    assert outside.min() > inside.max()


def test_a_shifted_mix_drifts_and_an_even_one_does_not() -> None:
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 10, 5000)
    same = rng.integers(0, 10, 1000)
    shifted = np.where(rng.random(1000) < 0.3, 3, rng.integers(0, 10, 1000))
    groups = np.arange(10) // 2
    assert not drift.compare(reference, same, 10, groups).shifted
    result = drift.compare(reference, shifted, 10, groups)
    assert result.shifted
    assert result.movers[0][0] == 3
