"""MurmurHash3 (x86, 32-bit, seed 0) of many byte strings at once, with numpy.

It gives what `sklearn.utils.murmurhash3_32` gives for each string (the hash scikit-learn's
`HashingVectorizer` uses) without a Python call per string: the injection scanner hashes
every character n-gram of a prompt, thousands for a long one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

# uint32 arrays throughout; numpy's stubs widen shifts by a Python int to a signed type.
Words = npt.NDArray[Any]

_C1 = np.uint32(0xCC9E2D51)
_C2 = np.uint32(0x1B873593)


def murmurhash3_32(
    data: Words, starts: npt.NDArray[np.int64], length: int
) -> npt.NDArray[np.int32]:
    """Signed 32-bit hashes of the `length`-byte strings at `starts` in `data` (one byte
    per element, widened to uint32 so shifts stay in range). uint32 arithmetic wraps
    around as the C reference's does."""
    h: Words = np.zeros(len(starts), dtype=np.uint32)
    for block in range(length // 4):
        at = starts + 4 * block
        k = data[at] | (data[at + 1] << 8) | (data[at + 2] << 16) | (data[at + 3] << 24)
        h ^= _scramble(k)
        h = (h << 13) | (h >> 19)
        h = h * np.uint32(5) + np.uint32(0xE6546B64)
    tail = length & 3
    if tail:
        at = starts + (length - tail)
        k = data[at].copy()
        if tail > 1:
            k |= data[at + 1] << 8
        if tail > 2:
            k |= data[at + 2] << 16
        h ^= _scramble(k)
    h ^= np.uint32(length)
    h ^= h >> 16
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> 13
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> 16
    out: npt.NDArray[np.int32] = h.view(np.int32)
    return out


def _scramble(k: Words) -> Words:
    k = k * _C1
    k = (k << 15) | (k >> 17)
    return k * _C2
