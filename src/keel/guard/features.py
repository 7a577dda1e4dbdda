"""Features of the injection classifier: hashed character n-grams and scanner signals.

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
EXTRA_NAMES = (
    *(f"rule.{c}" for c in CATEGORIES),
    "invisible_chars",
    "unicode_tag_text",
    "homoglyphs",
    "leetspeak",
    "encoded_payload",
)


def hasher() -> object:
    """The stateless n-gram hasher (scikit-learn's, so training and serving agree)."""
    from sklearn.feature_extraction.text import HashingVectorizer  # type: ignore[import-untyped]

    return HashingVectorizer(
        analyzer="char_wb",
        ngram_range=CHAR_NGRAMS,
        n_features=CHAR_FEATURES,
        alternate_sign=False,
        norm=None,
        lowercase=False,  # canonical text is lower-cased already
        dtype=np.float32,
    )


def ngram_counts(texts: list[str], vectorizer: object | None = None) -> csr_matrix:
    """Raw hashed n-gram counts, one row per text."""
    vec = vectorizer if vectorizer is not None else hasher()
    return vec.transform(texts).tocsr()  # type: ignore[attr-defined]


def idf_from_counts(counts: csr_matrix) -> npt.NDArray[np.float32]:
    """Smoothed inverse document frequency of each hashed n-gram."""
    df = np.asarray((counts > 0).sum(axis=0)).ravel()
    n = counts.shape[0]
    idf: npt.NDArray[np.float32] = (np.log((1.0 + n) / (1.0 + df)) + 1.0).astype(np.float32)
    return idf


def tfidf(counts: csr_matrix, idf: npt.NDArray[np.float32]) -> csr_matrix:
    """Sublinear tf-idf, each row scaled to unit length."""
    from sklearn.preprocessing import normalize as l2_rows  # type: ignore[import-untyped]

    weighted = counts.copy().astype(np.float32)
    weighted.data = np.log1p(weighted.data)
    weighted = weighted.multiply(idf.reshape(1, -1)).tocsr()
    return l2_rows(weighted).astype(np.float32).tocsr()


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
