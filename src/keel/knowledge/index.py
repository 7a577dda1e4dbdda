"""The two indexes of a knowledge base, each a plain object you build, query and save.

`LexicalIndex` is BM25 (bm25s) over stemmed words; `DenseIndex` holds the chunk vectors,
searched exactly below `ANN_MIN` vectors and through a usearch HNSW graph above it.
Both answer by position; `KbIndex` maps positions to chunk ids, documents and the chunks'
own text and offsets (so a search reads no store), and is saved under the data dir with
the base's revision so a stale copy is rebuilt.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

    Floats = npt.NDArray[np.float32]
    Ints = npt.NDArray[np.int64]
    Mask = npt.NDArray[np.bool_]

# Exact search over a few thousand vectors is both faster and better than a graph.
ANN_MIN = 20_000
FORMAT = 2  # 2: the chunks' text and offsets are kept with the index
_WORD = re.compile(r"\w\w+|\d", re.UNICODE)


@lru_cache(maxsize=1)
def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("english")


@lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    # A vocabulary repeats itself: a dict hit is several times cheaper than the stemmer.
    stemmed: str = _stemmer().stemWord(word)
    return stemmed


def words(text: str) -> list[str]:
    """Lower-cased, stop words out, Snowball-stemmed: the terms BM25 counts."""
    stop = _stopwords()
    return [_stem(word) for word in _WORD.findall(text.lower()) if word not in stop]


class LexicalIndex:
    """BM25 (Lucene's variant) over `words()` of each text."""

    def __init__(self, k1: float = 1.2, b: float = 0.75):
        self.k1, self.b = k1, b
        self._retriever: Any = None
        self.size = 0

    def build(self, texts: list[str]) -> None:
        self.build_from_words([words(text) for text in texts])

    def build_from_words(self, tokens: list[list[str]]) -> None:
        """Index texts already split by `words()`."""
        import bm25s

        self.size = len(tokens)
        if not tokens:
            self._retriever = None
            return
        # An empty text still needs a row: positions must match the dense index's.
        tokens = [found or ["\u2205"] for found in tokens]
        retriever = bm25s.BM25(k1=self.k1, b=self.b, method="lucene")
        retriever.index(tokens, show_progress=False)
        self._retriever = retriever

    def scores(self, query: str) -> Floats:
        """BM25 score of every text for `query` (zeros when no word of it is indexed)."""
        if self._retriever is None:
            return np.zeros(self.size, dtype=np.float32)
        vocab = self._retriever.vocab_dict
        ids = [vocab[word] for word in words(query) if word in vocab]
        if not ids:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self._retriever.get_scores_from_ids(ids), dtype=np.float32)

    def save(self, folder: Path) -> None:
        if self._retriever is not None:
            self._retriever.save(str(folder))

    @classmethod
    def load(cls, folder: Path, size: int, k1: float, b: float) -> LexicalIndex:
        import bm25s

        index = cls(k1, b)
        index.size = size
        if size:
            index._retriever = bm25s.BM25.load(str(folder))
        return index


class DenseIndex:
    """Unit vectors by position; cosine similarity is their dot product."""

    def __init__(self, vectors: Floats):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self._graph: Any = None

    @property
    def size(self) -> int:
        return int(self.vectors.shape[0])

    def _ann(self) -> Any:
        if self._graph is None:
            from usearch.index import Index

            graph = Index(ndim=self.vectors.shape[1], metric="ip", dtype="f16")
            graph.add(np.arange(self.size, dtype=np.int64), self.vectors, threads=0)
            self._graph = graph
        return self._graph

    def scores(self, query: Floats) -> Floats:
        """Cosine of every vector with `query` (exact)."""
        if not self.size:
            return np.zeros(0, dtype=np.float32)
        return np.asarray(self.vectors @ query, dtype=np.float32)

    def search(self, query: Floats, k: int, mask: Mask | None = None) -> tuple[Ints, Floats]:
        """Top `k` positions by cosine (exact when small or filtered, else the ANN graph)."""
        if not self.size or k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        if self.size < ANN_MIN or mask is not None:
            scores = self.scores(query)
            if mask is not None:
                scores = np.where(mask, scores, -np.inf).astype(np.float32)
            return top_k(scores, k)
        found = self._ann().search(query, min(k, self.size))
        keys = np.asarray(found.keys, dtype=np.int64)
        return keys, (1.0 - np.asarray(found.distances, dtype=np.float32))

    def save(self, folder: Path) -> None:
        np.save(folder / "vectors.npy", self.vectors)

    @classmethod
    def load(cls, folder: Path) -> DenseIndex:
        return cls(np.load(folder / "vectors.npy"))


def top_k(scores: Floats, k: int) -> tuple[Ints, Floats]:
    """Positions of the `k` highest finite scores, best first."""
    k = min(k, scores.shape[0])
    if k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    part = np.argpartition(-scores, k - 1)[:k]
    order = part[np.argsort(-scores[part], kind="stable")]
    order = order[np.isfinite(scores[order])]
    return order.astype(np.int64), scores[order].astype(np.float32)


@dataclass(frozen=True, slots=True)
class Passage:
    """What a hit shows of its chunk: its text, its document offsets and heading path."""

    text: str
    start: int
    end: int
    heading_path: tuple[str, ...]


@dataclass
class KbIndex:
    """Everything search needs for one knowledge base, by position."""

    kb_id: str
    model: str
    revision: int
    chunk_ids: Ints
    document_ids: list[str]  # one per position
    documents: dict[str, dict[str, Any]]  # document id -> {"source", "metadata"}
    dense: DenseIndex
    lexical: LexicalIndex
    passages: list[Passage]  # one per position
    _positions: dict[int, int] = field(default_factory=dict, repr=False)

    @property
    def size(self) -> int:
        return int(self.chunk_ids.shape[0])

    def mask(self, filters: dict[str, Any] | None) -> Mask | None:
        """Positions whose document matches every filter (None: no filter)."""
        if not filters:
            return None
        allowed = {doc_id for doc_id, doc in self.documents.items() if matches(doc, filters)}
        return np.fromiter(
            (doc_id in allowed for doc_id in self.document_ids), dtype=np.bool_, count=self.size
        )

    def save(self, folder: Path) -> None:
        """Write to a fresh folder, then swap it in: a reader never sees half an index."""
        staging = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        self.dense.save(staging)
        self.lexical.save(staging / "bm25")
        np.save(staging / "chunk_ids.npy", self.chunk_ids)
        rows = [[p.text, p.start, p.end, list(p.heading_path)] for p in self.passages]
        (staging / "passages.json").write_text(json.dumps(rows))
        manifest = {
            "format": FORMAT,
            "kb_id": self.kb_id,
            "model": self.model,
            "revision": self.revision,
            "size": self.size,
            "k1": self.lexical.k1,
            "b": self.lexical.b,
            "document_ids": self.document_ids,
            "documents": self.documents,
        }
        (staging / "manifest.json").write_text(json.dumps(manifest))
        old = folder.with_name(folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            folder.rename(old)
        staging.rename(folder)
        shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, folder: Path) -> KbIndex | None:
        """The saved index, or None when there is none or it is unreadable."""
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
            if manifest.get("format") != FORMAT:
                return None
            chunk_ids = np.load(folder / "chunk_ids.npy")
            dense = DenseIndex.load(folder)
            lexical = LexicalIndex.load(
                folder / "bm25", manifest["size"], manifest["k1"], manifest["b"]
            )
            passages = [
                Passage(str(text), int(start), int(end), tuple(heading_path))
                for text, start, end, heading_path in json.loads(
                    (folder / "passages.json").read_text()
                )
            ]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if len(passages) != manifest["size"]:
            return None
        return cls(
            kb_id=manifest["kb_id"],
            model=manifest["model"],
            revision=manifest["revision"],
            chunk_ids=chunk_ids,
            document_ids=manifest["document_ids"],
            documents=manifest["documents"],
            dense=dense,
            lexical=lexical,
            passages=passages,
        )


def check_filters(filters: dict[str, Any]) -> None:
    """Refuse a filter `matches` cannot apply, naming it (ValueError with the fix)."""
    for key, wanted in filters.items():
        if isinstance(wanted, dict):
            unknown = set(wanted) - {"$in", "$prefix"}
            if unknown or not wanted:
                raise ValueError(
                    f"filter {key!r}: operators are $in and $prefix, not {sorted(unknown)}"
                )
            if "$in" in wanted and not isinstance(wanted["$in"], list):
                raise ValueError(f"filter {key!r}: $in takes a list of values")
            if "$prefix" in wanted and not isinstance(wanted["$prefix"], str):
                raise ValueError(f"filter {key!r}: $prefix takes a string")
        elif isinstance(wanted, list):
            raise ValueError(f"filter {key!r}: give one value, or {{'$in': [...]}} for several")


def matches(document: dict[str, Any], filters: dict[str, Any]) -> bool:
    """Equality on a metadata field (or `source`), `{"$in": [...]}` for any of several,
    `{"$prefix": "..."}` on text: every filter must hold."""
    metadata = document.get("metadata", {})
    for key, wanted in filters.items():
        value = document.get("source") if key == "source" else metadata.get(key)
        if isinstance(wanted, dict):
            if "$in" in wanted and value not in wanted["$in"]:
                return False
            if "$prefix" in wanted and not str(value or "").startswith(str(wanted["$prefix"])):
                return False
        elif value != wanted:
            return False
    return True
