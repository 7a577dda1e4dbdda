"""Features of the injection classifier: hashed character and word n-grams, and scanner
signals.

Training (`keel.guard.train`) and the scanner build features with these functions only,
so the shipped weights always meet the features they were fitted on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from keel.guard.heuristics import CATEGORIES, Hit, category_vector
from keel.guard.normalize import Normalized

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix  # type: ignore[import-untyped]

CHAR_NGRAMS = (3, 5)
CHAR_FEATURES = 2**17
WORD_NGRAMS = (1, 2)
WORD_FEATURES = 2**16
# One n-gram row is [character block | word block]; each block is l2-normalised alone.
NGRAM_FEATURES = CHAR_FEATURES + WORD_FEATURES
EXTRA_NAMES = (
    *(f"rule.{c}" for c in CATEGORIES),
    "invisible_chars",
    "unicode_tag_text",
    "homoglyphs",
    "leetspeak",
    "encoded_payload",
)


class NgramHasher:
    """Stateless character and word n-gram hashers (scikit-learn's, so training and serving
    agree); `counts` gives one [character | word] row per text."""

    def __init__(self) -> None:
        from sklearn.feature_extraction.text import (  # type: ignore[import-untyped]
            HashingVectorizer,
        )

        common: dict[str, object] = {
            "alternate_sign": False,
            "norm": None,
            "lowercase": False,  # canonical text is lower-cased already
            "dtype": np.float32,
        }
        self._char = HashingVectorizer(
            analyzer="char_wb", ngram_range=CHAR_NGRAMS, n_features=CHAR_FEATURES, **common
        )
        # Single-letter words count too: "a", "i" carry meaning in "act as a", "i want".
        self._word = HashingVectorizer(
            analyzer="word",
            ngram_range=WORD_NGRAMS,
            n_features=WORD_FEATURES,
            token_pattern=r"(?u)\b\w+\b",
            **common,
        )

    def counts(self, texts: list[str]) -> csr_matrix:
        """Raw hashed n-gram counts, one row per text."""
        from scipy.sparse import hstack

        return hstack([self._char.transform(texts), self._word.transform(texts)]).tocsr()


def ngram_counts(texts: list[str], hasher: NgramHasher | None = None) -> csr_matrix:
    """Raw hashed n-gram counts, one [character | word] row per text."""
    return (hasher or NgramHasher()).counts(texts)


def idf_from_counts(counts: csr_matrix) -> npt.NDArray[np.float32]:
    """Smoothed inverse document frequency of each hashed n-gram."""
    df = np.asarray((counts > 0).sum(axis=0)).ravel()
    n = counts.shape[0]
    idf: npt.NDArray[np.float32] = (np.log((1.0 + n) / (1.0 + df)) + 1.0).astype(np.float32)
    return idf


def tfidf(counts: csr_matrix, idf: npt.NDArray[np.float32]) -> csr_matrix:
    """Sublinear tf-idf; the character and the word block of each row have unit length."""
    from scipy.sparse import hstack
    from sklearn.preprocessing import normalize as l2_rows  # type: ignore[import-untyped]

    weighted = counts.copy().astype(np.float32)
    weighted.data = np.log1p(weighted.data)
    weighted = weighted.multiply(idf.reshape(1, -1)).tocsr()
    blocks = [weighted[:, :CHAR_FEATURES], weighted[:, CHAR_FEATURES:]]
    return hstack([l2_rows(b) for b in blocks]).astype(np.float32).tocsr()


def extra_features(norm: Normalized, hits: list[Hit]) -> npt.NDArray[np.float32]:
    """Heuristic categories and obfuscation signals, in `EXTRA_NAMES` order."""
    values = [
        *category_vector(hits),
        1.0 if norm.invisible else 0.0,
        1.0 if norm.hidden_text else 0.0,
        min(norm.homoglyphs, 5) / 5.0,
        min(norm.leet_tokens, 5) / 5.0,
        1.0 if norm.decoded else 0.0,
    ]
    return np.asarray(values, dtype=np.float32)
