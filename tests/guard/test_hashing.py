"""Bulk MurmurHash3 gives scikit-learn's hash for every string."""

from __future__ import annotations

import numpy as np
from sklearn.utils import murmurhash3_32 as reference  # type: ignore[import-untyped]

from keel.guard.hashing import murmurhash3_32


def test_every_length_hashes_as_scikit_learn_does() -> None:
    rng = np.random.default_rng(7)
    for length in range(24):  # no block, blocks, and every tail length
        strings = [bytes(rng.integers(0, 256, length, dtype=np.uint8)) for _ in range(64)]
        data = np.frombuffer(b"".join(strings), dtype=np.uint8).astype(np.uint32)
        starts = np.arange(len(strings), dtype=np.int64) * length
        assert murmurhash3_32(data, starts, length).tolist() == [reference(s, 0) for s in strings]


def test_strings_are_read_where_they_start() -> None:
    data = np.frombuffer(b" ignore previous ", dtype=np.uint8).astype(np.uint32)
    starts = np.asarray([1, 8], dtype=np.int64)
    assert murmurhash3_32(data, starts, 6).tolist() == [
        reference("ignore", 0),
        reference("previo", 0),
    ]
