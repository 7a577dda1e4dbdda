"""Features of the injection classifier: hashed character and word n-grams, and scanner
signals.

Training (`training.guard.train`) and the scanner build features with these functions only,
so the shipped weights always meet the features they were fitted on.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from keel.guard.hashing import murmurhash3_32
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


# scikit-learn's default word pattern, with single-letter words kept (see NgramHasher).
WORD_TOKEN = r"(?u)\b\w+\b"
# Shorter texts hash their character n-grams one Python call each: for them that is
# quicker than numpy's fixed cost per array operation.
VECTOR_MIN_CHARS = 160


class NgramHasher:
    """Character and word n-gram hashers with scikit-learn's hashing, so training and
    serving agree: `counts` gives one [character | word] row per text (for training, via
    scikit-learn); `row` gives one text's row directly, for the scanner, where building
    sparse matrices would cost more than the arithmetic."""

    def __init__(self) -> None:
        from sklearn.feature_extraction.text import (  # type: ignore[import-untyped]
            HashingVectorizer,
        )
        from sklearn.utils import murmurhash3_32  # type: ignore[import-untyped]

        self._murmur = murmurhash3_32
        self._word_token = re.compile(WORD_TOKEN)

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
            token_pattern=WORD_TOKEN,
            **common,
        )

    def counts(self, texts: list[str]) -> csr_matrix:
        """Raw hashed n-gram counts, one row per text."""
        from scipy.sparse import hstack

        return hstack([self._char.transform(texts), self._word.transform(texts)]).tocsr()

    def row(self, text: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """One text's raw counts as (sorted columns, counts): the nonzero entries of its
        `counts` row, computed without scikit-learn's per-call validation."""
        chars = self._char_columns(text)
        words = self._columns(Counter(self._word_ngrams(text)), WORD_FEATURES)
        columns = np.concatenate((chars[0], words[0] + CHAR_FEATURES))
        return columns, np.concatenate((chars[1], words[1]))

    def _char_columns(self, text: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        if len(text) >= VECTOR_MIN_CHARS:
            try:
                hashes = char_wb_hashes(text, *CHAR_NGRAMS)
            except UnicodeEncodeError:
                pass  # a lone surrogate: hashing n-gram by n-gram fails as scikit-learn does
            else:
                columns, counts = np.unique(
                    np.abs(hashes.astype(np.int64)) % CHAR_FEATURES, return_counts=True
                )
                return columns, counts.astype(np.float32)
        return self._columns(Counter(char_wb_ngrams(text, *CHAR_NGRAMS)), CHAR_FEATURES)

    def _word_ngrams(self, text: str) -> list[str]:
        tokens: list[str] = self._word_token.findall(text)
        # WORD_NGRAMS is (1, 2): the words, then each pair joined by a space.
        return [*tokens, *(f"{a} {b}" for a, b in pairwise(tokens))]

    def _columns(
        self, grams: Counter[str], n_features: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Hash each distinct n-gram once (`FeatureHasher`: |murmurhash3_32| mod n, no
        alternating sign); n-grams that collide add up."""
        if not grams:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        murmur = self._murmur
        hashes = np.fromiter((murmur(g, 0) for g in grams), dtype=np.int64, count=len(grams))
        columns, inverse = np.unique(np.abs(hashes) % n_features, return_inverse=True)
        counts = np.fromiter(grams.values(), dtype=np.float64, count=len(grams))
        return columns, np.bincount(inverse, weights=counts).astype(np.float32)


def char_wb_hashes(text: str, min_n: int, max_n: int) -> npt.NDArray[np.int32]:
    """murmurhash3_32 of every n-gram `char_wb_ngrams` gives, in another order, hashed
    in bulk. In " word1 word2 … " (words joined by single spaces and padded), those
    n-grams are exactly the windows with no space inside, only at their ends."""
    if min_n != 3:
        # With 3 every padded word yields n-grams; a longer minimum would have to count
        # shorter words whole, which windows do not.
        raise ValueError(f"char_wb_hashes needs min_n == 3, not {min_n}")
    padded = f" {' '.join(text.split())} "
    data = padded.encode("utf-8")
    size = len(padded)
    buffer = np.frombuffer(data, dtype=np.uint8).astype(np.uint32)
    offsets: npt.NDArray[np.int64] | None = None  # byte offset of each character
    if len(data) == size:
        codes = buffer
    else:
        codes = np.frombuffer(padded.encode("utf-32-le"), dtype=np.uint32)
        widths = 1 + (codes >= 0x80) + (codes >= 0x800) + (codes >= 0x10000)
        offsets = np.zeros(size + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(widths)
    spaces = np.zeros(size + 1, dtype=np.int64)
    spaces[1:] = np.cumsum(codes == 32)
    hashes: list[npt.NDArray[np.int32]] = []
    for n in range(min_n, max_n + 1):
        if size < n:
            break
        starts = np.arange(size - n + 1, dtype=np.int64)
        # Spaces among characters start+1 .. start+n-2 (the window without its ends).
        starts = starts[spaces[starts + n - 1] == spaces[starts + 1]]
        if offsets is None:
            hashes.append(murmurhash3_32(buffer, starts, n))
            continue
        first = offsets[starts]
        lengths = offsets[starts + n] - first
        for length in np.unique(lengths):
            hashes.append(murmurhash3_32(buffer, first[lengths == length], int(length)))
    return np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.int32)


def char_wb_ngrams(text: str, min_n: int, max_n: int) -> list[str]:
    """scikit-learn's `char_wb` analyzer: n-grams inside each space-padded word, a word
    shorter than n counted once as a whole."""
    grams: list[str] = []
    for word in text.split():
        padded = f" {word} "
        size = len(padded)
        for n in range(min_n, max_n + 1):
            if size <= n:
                grams.append(padded)
                break
            grams += [padded[i : i + n] for i in range(size - n + 1)]
    return grams


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


@dataclass(frozen=True, slots=True)
class SparseRow:
    """One text's tf-idf n-gram vector: its nonzero columns, ascending, and values."""

    columns: npt.NDArray[np.int64]
    values: npt.NDArray[np.float32]

    def dot(self, weights: npt.NDArray[np.float32]) -> np.float32:
        """The float32 dot product summed in column order, as scipy's sparse matrix-vector
        product does, so scores match the matrix path to the last bit."""
        if not len(self.values):
            return np.float32(0.0)
        products = self.values * weights[self.columns]
        return np.float32(np.add.accumulate(products)[-1])


def tfidf_rows(
    texts: Sequence[str], idf: npt.NDArray[np.float32], hasher: NgramHasher | None = None
) -> list[SparseRow]:
    """`tfidf(ngram_counts(texts))`, row by row, computed the same way in float32."""
    hasher = hasher or NgramHasher()
    rows: list[SparseRow] = []
    for text in texts:
        columns, counts = hasher.row(text)
        values = np.log1p(counts) * idf[columns]
        split = int(np.searchsorted(columns, CHAR_FEATURES))
        rows.append(SparseRow(columns, np.concatenate([_l2(values[:split]), _l2(values[split:])])))
    return rows


def _l2(block: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    # scikit-learn's inplace_csr_row_normalize_l2: float32 squares summed in order into a
    # double, each value divided by the root as a double and stored back as float32.
    if not len(block):
        return block
    total = float(np.add.accumulate(block * block, dtype=np.float64)[-1])
    if total == 0.0:
        return block
    out: npt.NDArray[np.float32] = (block.astype(np.float64) / np.sqrt(total)).astype(np.float32)
    return out


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
