from __future__ import annotations

import numpy as np

from keel.cache.vectors import VectorIndex


def _unit(rng: np.random.Generator, count: int, dimension: int = 32) -> np.ndarray:
    vectors = rng.standard_normal((count, dimension)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_flat_search_finds_the_nearest_and_honours_the_floor() -> None:
    rng = np.random.default_rng(1)
    vectors = _unit(rng, 50)
    index = VectorIndex(32)
    for i, vector in enumerate(vectors):
        index.add(f"e{i}", vector)
    found = index.search(vectors[7], 3, 0.0)
    assert found[0][0] == "e7"
    assert abs(found[0][1] - 1.0) < 1e-5
    assert index.search(vectors[7], 3, 0.99) == [("e7", found[0][1])]


def test_removal_keeps_the_rest_searchable() -> None:
    rng = np.random.default_rng(2)
    vectors = _unit(rng, 20)
    index = VectorIndex(32)
    for i, vector in enumerate(vectors):
        index.add(f"e{i}", vector)
    index.remove("e3")
    index.remove("e19")  # the last row
    assert len(index) == 18
    assert "e3" not in index
    assert index.search(vectors[3], 1, 0.999) == []
    assert index.search(vectors[18], 1, 0.0)[0][0] == "e18"


def test_a_large_bucket_moves_to_hnsw_and_still_finds_its_vectors() -> None:
    rng = np.random.default_rng(3)
    vectors = _unit(rng, 600)
    index = VectorIndex(32, hnsw_from=256)
    for i, vector in enumerate(vectors):
        index.add(f"e{i}", vector)
    assert len(index) == 600
    found = [index.search(vectors[i], 1, 0.0)[0][0] == f"e{i}" for i in range(0, 600, 7)]
    assert sum(found) / len(found) > 0.95  # approximate search, near-perfect recall here
    index.remove("e14")
    assert all(entry_id != "e14" for entry_id, _ in index.search(vectors[14], 5, 0.0))
    index.add("e14", vectors[14])  # re-added under a new label
    assert index.search(vectors[14], 1, 0.0)[0][0] == "e14"


def test_batches_land_in_the_hnsw_graph() -> None:
    rng = np.random.default_rng(4)
    vectors = _unit(rng, 400)
    index = VectorIndex(32, hnsw_from=100)
    for i in range(100):
        index.add(f"e{i}", vectors[i])
    index.add_many([f"e{i}" for i in range(100, 400)], vectors[100:])
    index.add_many(["e5", "e6"], vectors[5:7])  # re-adding replaces
    assert len(index) == 400
    assert index.search(vectors[250], 1, 0.0)[0][0] == "e250"
    assert index.search(vectors[6], 1, 0.0)[0][0] == "e6"
