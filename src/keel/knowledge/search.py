"""Search: each base's index (built from the store, kept in memory and under the data dir,
rebuilt when the base's revision moved on) and the ranking of one query over it.

A warm search reads no store: the base's row is kept in memory until a change event about
that base (a write here, or on another replica through the change bus) drops it, and the
chunks' text comes from the index. Store reads (a cold base, a rebuild) and ranking run in
worker threads; the query is embedded on the embedder's.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from keel.embeddings.base import Embedder
from keel.errors import InvalidRequest
from keel.events import Change
from keel.knowledge.fusion import hybrid
from keel.knowledge.index import (
    DenseIndex,
    KbIndex,
    LexicalIndex,
    Passage,
    check_filters,
    top_k,
    words,
)
from keel.knowledge.lookup import current
from keel.knowledge.records import MAX_TOP_K, KnowledgeBase, Mode, SearchHit, embedding_text
from keel.knowledge.rerank import CANDIDATES, reranker
from keel.knowledge.tables import KnowledgeChunkRow, KnowledgeDocumentRow, KnowledgeEmbeddingRow
from keel.store.db import Database


class Searcher:
    def __init__(self, database: Database, folder: Path, embedder: Callable[[], Embedder]):
        self.database = database
        self.folder = folder  # <data_dir>/knowledge: one folder per base
        self.embedder = embedder  # the served model, or ServiceUnavailable
        self._indexes: dict[str, KbIndex] = {}
        self._lock = threading.Lock()  # one rebuild at a time per process
        # (project, name) -> the base's row as last read; dropped by a change event about it.
        self._bases: dict[tuple[str, str], KnowledgeBase] = {}
        self._changes = 0  # a row read while a change arrived is not kept (it may be stale)
        # Never held long: change handlers may run on the event loop, and a rebuild holds _lock.
        self._rows_lock = threading.Lock()
        self.store_reads = 0  # base rows read from the store (exported for tests and stats)
        # Each index's document number per position (for document-level fusion), by index.
        self._groups: dict[int, Any] = {}

    def forget(self, kb_id: str) -> None:
        """A deleted base: its index leaves memory."""
        with self._lock:
            self._indexes.pop(kb_id, None)

    def changed(self, change: Change) -> None:
        """A change event on the "knowledge" topic: the named base's row is read again on its
        next search (key "*": every base, as after a lost change channel)."""
        with self._rows_lock:
            self._changes += 1
            dropped = [key for key in self._bases if change.key in ("*", key[1])
                       and change.project_id in ("*", key[0])]  # fmt: skip
            for key in dropped:
                # Its index goes too: a deleted base's would stay in memory for good.
                self._indexes.pop(self._bases.pop(key).id, None)

    def base(self, project_id: str, name: str) -> KnowledgeBase:
        """The base's row: from memory, else read from the store (raises NotFound)."""
        kb = self._bases.get((project_id, name))
        if kb is None:
            seen = self._changes
            kb = current(self.database, project_id, name)
            with self._rows_lock:
                self.store_reads += 1
                if self._changes == seen:
                    self._bases[(project_id, name)] = kb
        return kb

    def _build_index(self, kb: KnowledgeBase) -> KbIndex:
        with self.database.session() as session:
            documents: dict[str, dict[str, Any]] = {
                row.id: {"source": row.source, "metadata": dict(row.meta)}
                for row in session.scalars(
                    select(KnowledgeDocumentRow).where(KnowledgeDocumentRow.kb_id == kb.id)
                )
            }
            rows = session.execute(
                select(
                    KnowledgeChunkRow.id,
                    KnowledgeChunkRow.document_id,
                    KnowledgeChunkRow.text,
                    KnowledgeChunkRow.heading_path,
                    KnowledgeEmbeddingRow.vector,
                    KnowledgeChunkRow.start,
                    KnowledgeChunkRow.end,
                )
                .join(
                    KnowledgeEmbeddingRow,
                    (KnowledgeEmbeddingRow.chunk_id == KnowledgeChunkRow.id)
                    & (KnowledgeEmbeddingRow.model == kb.embedding_model),
                )
                .where(KnowledgeChunkRow.kb_id == kb.id)
                .order_by(KnowledgeChunkRow.id)
            ).all()
        dimension = self.embedder().dimension
        vectors = np.zeros((len(rows), dimension), dtype=np.float32)
        texts: list[str] = []
        passages: list[Passage] = []
        for position, (_, doc_id, text, heading_path, vector, start, end) in enumerate(rows):
            vectors[position] = np.frombuffer(vector, dtype="<f4")
            title = documents[doc_id]["metadata"].get("title")
            texts.append(embedding_text(text, heading_path, title))
            passages.append(Passage(text, start, end, tuple(heading_path)))
        lexical = LexicalIndex(kb.config.bm25_k1, kb.config.bm25_b)
        lexical.build(texts)
        return KbIndex(
            kb_id=kb.id,
            model=kb.embedding_model,
            revision=kb.revision,
            chunk_ids=np.asarray([row[0] for row in rows], dtype=np.int64),
            document_ids=[row[1] for row in rows],
            documents=documents,
            dense=DenseIndex(vectors),
            lexical=lexical,
            passages=passages,
        )

    def index_for(self, kb: KnowledgeBase) -> KbIndex:
        """The base's index at its current revision: in memory, else from disk, else rebuilt
        from the store (and saved for the next start)."""
        with self._lock:
            index = self._indexes.get(kb.id)
            if index is not None and index.revision == kb.revision:
                return index
            folder = self.folder / kb.id
            index = KbIndex.load(folder)
            if index is None or index.revision != kb.revision or index.model != kb.embedding_model:
                index = self._build_index(kb)
                with contextlib.suppress(OSError):  # a read-only data dir serves from memory
                    index.save(folder)
            self._indexes[kb.id] = index
            return index

    # -- search --------------------------------------------------------------------------

    async def search(
        self,
        project_id: str,
        name: str,
        query: str,
        top_k: int = 10,
        filters: dict[str, Any] | None = None,
        mode: Mode = "hybrid",
        rerank: str | None = None,
    ) -> list[SearchHit]:
        """The `top_k` chunks of base `name` that best answer `query`, best first; with
        `rerank`, the named reranker reorders the first ranking's best candidates."""
        second = reranker(rerank)
        if not query.strip():
            raise InvalidRequest("query is empty; send the text to search for", param="query")
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidRequest(f"top_k must be 1-{MAX_TOP_K}", param="top_k")
        if mode not in ("dense", "lexical", "hybrid"):
            raise InvalidRequest("mode is one of dense, lexical, hybrid", param="mode")
        try:
            check_filters(filters or {})
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="filters") from exc
        kb = self._bases.get((project_id, name))
        if kb is None:
            kb = await asyncio.to_thread(self.base, project_id, name)
        index = self._indexes.get(kb.id)
        if index is None or index.revision != kb.revision:
            index = await asyncio.to_thread(self.index_for, kb)
        query_vector: Any = None
        if mode != "lexical":
            embedder = self.embedder()
            if embedder.name != kb.embedding_model:
                raise InvalidRequest(
                    f"knowledge base {name!r} was embedded with {kb.embedding_model!r}, not "
                    f"{embedder.name!r}; search it with mode 'lexical' or serve its model",
                    param="mode",
                    code="embedding_model_mismatch",
                )
            query_vector = (await embedder.embed([query])).vectors[0]
        depth = max(top_k, CANDIDATES) if second is not None else top_k
        hits = await asyncio.to_thread(
            self._rank, index, kb, query, query_vector, depth, filters, mode
        )
        if second is not None:
            hits = (await asyncio.to_thread(second.rerank, query, hits))[:top_k]
        return hits

    def _rank(
        self,
        index: KbIndex,
        kb: KnowledgeBase,
        query: str,
        query_vector: Any,
        k: int,
        filters: dict[str, Any] | None,
        mode: Mode,
    ) -> list[SearchHit]:
        mask = index.mask(filters)
        lexical = index.lexical.scores(query) if mode != "dense" else None
        dense = None
        if mode == "hybrid":
            assert lexical is not None
            positions, scores, dense = hybrid(
                query_vector,
                index.dense.vectors,
                lexical,
                kb.config.fusion,
                k,
                mask,
                self._document_numbers(index),
            )
        elif mode == "dense":
            # Exact below ANN_MIN chunks or with a filter, else the usearch graph.
            positions, scores = index.dense.search(query_vector, k, mask)
        else:
            assert lexical is not None
            if mask is not None:
                lexical = np.where(mask, lexical, -np.inf).astype(np.float32)
            positions, scores = top_k(lexical, k)
            keep = scores > 0
            positions, scores = positions[keep], scores[keep]
        return self._hits(index, positions, scores, dense, lexical, query, mode)

    def _document_numbers(self, index: KbIndex) -> Any:
        """Each position's document as a number, computed once per index object."""
        found = self._groups.get(id(index))
        if found is None or found[0] is not index:
            _, numbers = np.unique(np.asarray(index.document_ids), return_inverse=True)
            found = (index, numbers.astype(np.int64))
            with self._rows_lock:
                # Indexes no longer served are dropped with their numbers.
                live = {id(kept) for kept in self._indexes.values()} | {id(index)}
                self._groups = {key: v for key, v in self._groups.items() if key in live}
                self._groups[id(index)] = found
        return found[1]

    def _hits(
        self,
        index: KbIndex,
        positions: Any,
        scores: Any,
        dense: Any,
        lexical: Any,
        query: str,
        mode: Mode,
    ) -> list[SearchHit]:
        terms = set(words(query))
        hits = []
        for position, score in zip(positions, scores, strict=True):
            passage = index.passages[position]
            document_id = index.document_ids[position]
            document = index.documents.get(document_id, {})
            start, end = highlight(passage.text, terms)
            hits.append(
                SearchHit(
                    chunk_id=int(index.chunk_ids[position]),
                    document_id=document_id,
                    source=str(document.get("source", "")),
                    text=passage.text,
                    start=passage.start,
                    end=passage.end,
                    heading_path=list(passage.heading_path),
                    metadata=dict(document.get("metadata", {})),
                    score=round(float(score), 6),
                    dense_score=round(
                        float(dense[position] if dense is not None else score)
                        if mode != "lexical"
                        else 0.0,
                        6,
                    ),
                    lexical_score=round(float(lexical[position]), 6)
                    if lexical is not None
                    else 0.0,
                    highlight_start=passage.start + start,
                    highlight_end=passage.start + end,
                )
            )
        return hits


_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")


def highlight(text: str, terms: set[str]) -> tuple[int, int]:
    """Offsets (in `text`) of the sentence sharing most query terms; the first when none."""
    best, best_span = -1, (0, len(text))
    for match in _SENTENCE.finditer(text):
        sentence = match.group()
        if not sentence.strip():
            continue
        overlap = len(terms.intersection(words(sentence)))
        if overlap > best:
            lead = len(sentence) - len(sentence.lstrip())
            best, best_span = overlap, (match.start() + lead, match.end())
    return best_span
