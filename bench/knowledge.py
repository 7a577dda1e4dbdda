"""Knowledge bases: retrieval quality per mode, ingestion speed, search latency. Prints JSON.

    .venv/bin/python bench/knowledge.py [--data-dir DIR] [--folds 5] [--skip-latency]
        [--skip-quality] [--lexical-engines]
        [--scifact ../shared/data/retrieval/scifact] [--sizes 5000,100000]

1. Ingests BEIR SciFact's corpus.jsonl (one document per abstract: title as heading, the
   abstract chunked, embedded by the bundled MiniLM and indexed) through KnowledgeBases,
   timing chunks/s; then ingests it again to show that unchanged rows cost no embedding.
   With --data-dir, a base left by an interrupted run is resumed. The corpus can be embedded
   first in parallel processes (--shard I/N [--first-row R], each writing /tmp/keel-kb-shard-
   I-of-N.npz) and ingested with those vectors (--vectors FILE...): same chunker, same model.
2. Retrieval quality on SciFact's train queries (dev data: never a held-out test): nDCG@10
   and Recall@100 (pytrec_eval) for lexical, dense and hybrid, a document ranked by its best
   chunk. Fusion settings are chosen by k-fold cross-validation over the queries: each fold
   is scored with the setting that did best on the other folds, and the held-out-fold mean
   is reported beside the shipped default's figure on all queries.
3. Search latency p50/p95 (ranking after the query is embedded, and the query embedding
   apart) at 5k and 100k synthesised chunks.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from keel.auth.keys import KeyService
from keel.deploy.bundled import minilm_dir
from keel.embeddings.base import EmbeddingResult
from keel.embeddings.local import LocalEmbedder
from keel.knowledge.chunk import Chunker, tokenizer_counter
from keel.knowledge.fusion import Fusion, fuse, hybrid
from keel.knowledge.index import DenseIndex, KbIndex, LexicalIndex, Passage, top_k, words
from keel.knowledge.parse import parse
from keel.knowledge.service import KnowledgeBases, KnowledgeConfig
from keel.store import migrate
from keel.store.db import Database

HERE = Path(__file__).resolve().parent
DEFAULT_SCIFACT = HERE.parent.parent / "shared" / "data" / "retrieval" / "scifact"
PROJECT = "default"
KB = "scifact"


class CountingEmbedder:
    """The real embedder, counting the texts it is asked to embed. With `cached` (text
    digest -> vector, made by --shard runs of this script with the same model), known texts
    are served from it; only the others reach the model."""

    def __init__(self, inner: LocalEmbedder, cached: dict[str, np.ndarray] | None = None):
        self.inner = inner
        self.cached = cached or {}
        self.from_cache = 0
        self.name = inner.name
        self.dimension = inner.dimension
        self.error: str | None = None
        self.texts = 0

    @property
    def ready(self) -> bool:
        return self.inner.ready

    def start_loading(self) -> None:
        self.inner.start_loading()

    async def embed(self, texts: list[str]) -> EmbeddingResult:
        self.texts += len(texts)
        keys = [_digest(text) for text in texts]
        missing = [text for text, key in zip(texts, keys, strict=True) if key not in self.cached]
        if missing:
            result = await self.inner.embed(missing)
            fresh = dict(zip((_digest(t) for t in missing), result.vectors, strict=True))
        else:
            fresh = {}
        self.from_cache += len(texts) - len(missing)
        vectors = np.stack([self.cached[key] if key in self.cached else fresh[key] for key in keys])
        return EmbeddingResult(vectors.astype(np.float32), prompt_tokens=0)

    def close(self) -> None:
        self.inner.close()


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


async def shard(corpus: bytes, part: int, parts: int, out: Path, first_row: int = 0) -> None:
    """Embed the chunks of every `parts`-th row (from `part`), as the service would chunk
    and embed them, into `out` (.npz of digest -> vector): run several in parallel, then
    the bench with --vectors to ingest with them."""
    counter = tokenizer_counter(minilm_dir() / "tokenizer.json")
    chunker = Chunker(counter, KnowledgeConfig().chunk_tokens, KnowledgeConfig().overlap_tokens)
    lines = corpus.splitlines()[first_row:][part::parts]
    texts: list[str] = []
    for document in parse("corpus.jsonl", b"\n".join(lines)):
        title = document.title
        texts.extend(chunk.embedding_text(title) for chunk in chunker.chunk(document))
    embedder = LocalEmbedder("all-minilm-l6-v2", minilm_dir())
    vectors = (await embedder.embed(texts)).vectors
    embedder.close()
    np.savez(out, keys=np.asarray([_digest(t) for t in texts]), vectors=vectors)


def load_scifact(folder: Path) -> tuple[bytes, list[dict[str, str]], dict[str, dict[str, int]]]:
    corpus = (folder / "corpus.jsonl").read_bytes()
    queries = [json.loads(line) for line in (folder / "queries.jsonl").open()]
    qrels: dict[str, dict[str, int]] = {}
    for line in list((folder / "qrels.tsv").open())[1:]:
        query, doc, score = line.split()
        qrels.setdefault(query, {})[doc] = int(score)
    return corpus, [q for q in queries if q["_id"] in qrels], qrels


async def ingest(kbs: KnowledgeBases, corpus: bytes, embedder: CountingEmbedder) -> dict[str, Any]:
    """Ingest the corpus in 500-row uploads; a base left by an interrupted run is resumed
    (rows already stored are skipped by hash), so rates count this run's chunks only."""
    if KB not in {kb.name for kb in kbs.list_bases(PROJECT)}:
        kbs.create(PROJECT, KB, actor="bench", config=KnowledgeConfig())
    lines = corpus.splitlines(keepends=True)
    started, cpu_started = time.perf_counter(), time.process_time()
    chunks = 0
    batch = 500  # rows per upload, as a client sending a 500-row file would
    for first in range(0, len(lines), batch):
        part = b"".join(lines[first : first + batch])
        results = await kbs.ingest(PROJECT, KB, "corpus.jsonl", part, actor="bench")
        chunks += sum(r.chunks for r in results if r.status != "unchanged")
        print(f"ingested rows {first + batch}: {chunks} new chunks", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    kb = kbs.get(PROJECT, KB)
    index_started = time.perf_counter()
    kbs.index_for(kb)
    index_seconds = time.perf_counter() - index_started
    embedded = embedder.texts
    again_started = time.perf_counter()
    for first in range(0, len(lines), batch):
        part = b"".join(lines[first : first + batch])
        await kbs.ingest(PROJECT, KB, "corpus.jsonl", part, actor="bench")
    return {
        "documents": kb.documents,
        "chunks_total": kb.chunks,
        "chunks_this_run": chunks,
        "seconds": round(seconds, 1),
        "chunks_per_s": round(chunks / seconds, 1) if chunks else None,
        "process_cpu_s": round(cpu_seconds, 1),
        "chunks_per_cpu_s": round(chunks / cpu_seconds, 1) if chunks else None,
        "index_build_s": round(index_seconds, 2),
        "reingest_unchanged_s": round(time.perf_counter() - again_started, 1),
        "reingest_texts_embedded": embedder.texts - embedded,
        "texts_from_shard_vectors": embedder.from_cache,
    }


def evaluate(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> dict[str, Any]:
    import pytrec_eval

    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"})
    scores = evaluator.evaluate(run)
    return {
        query: {"ndcg10": value["ndcg_cut_10"], "recall100": value["recall_100"]}
        for query, value in scores.items()
    }


def doc_run(index: KbIndex, positions: Any, scores: Any) -> dict[str, float]:
    """A document's score is its best chunk's; BEIR ids are the part after '#'."""
    run: dict[str, float] = {}
    for position, score in zip(positions, scores, strict=True):
        source = index.documents[index.document_ids[int(position)]]["source"]
        doc = source.rsplit("#", 1)[-1]
        if doc not in run:
            run[doc] = float(score) + 1000.0  # trec_eval sorts by score: keep it positive
    return run


def mean(per_query: dict[str, dict[str, float]], queries: list[str], metric: str) -> float:
    return round(statistics.fmean(per_query[q][metric] for q in queries), 4)


def quality(
    index: KbIndex,
    queries: list[dict[str, str]],
    query_vectors: np.ndarray,
    qrels: dict[str, dict[str, int]],
    folds: int,
) -> dict[str, Any]:
    depth = 300  # chunks, enough for 100 documents
    dense_scores = [index.dense.scores(v) for v in query_vectors]
    lexical_scores = [index.lexical.scores(q["text"]) for q in queries]
    ids = [q["_id"] for q in queries]
    _, numbers = np.unique(np.asarray(index.document_ids), return_inverse=True)
    groups = numbers.astype(np.int64)

    def per_query_for(method: str, fusion: Fusion | None) -> dict[str, dict[str, float]]:
        runs = {}
        for qid, vector, dense, lexical in zip(
            ids, query_vectors, dense_scores, lexical_scores, strict=True
        ):
            if method == "dense":
                positions, scores = top_k(dense, depth)
            elif method == "lexical":
                positions, scores = top_k(lexical, depth)
            else:
                assert fusion is not None
                positions, scores, _ = hybrid(
                    vector, index.dense.vectors, lexical, fusion, depth, None, groups
                )
            runs[qid] = doc_run(index, positions, scores)
        return evaluate(runs, qrels)

    report: dict[str, Any] = {}
    for method in ("lexical", "dense"):
        found = per_query_for(method, None)
        report[method] = {"ndcg10": mean(found, ids, "ndcg10"),
                          "recall100": mean(found, ids, "recall100")}  # fmt: skip
    grid = [Fusion("rrf", 0.5, 60, depth)]
    grid += [Fusion("convex", weight, 60, depth) for weight in (0.4, 0.5, 0.6)]
    grid += [
        Fusion("convex", weight, 60, depth, feedback, feedback_weight)
        for weight, feedback, feedback_weight in ((0.5, 3, 0.5), (0.5, 5, 1.0), (0.6, 3, 0.5))
    ]
    grid += [Fusion("convex", 0.5, 60, depth, document_weight=share) for share in (0.25, 0.5, 1.0)]
    by_setting = {fusion: per_query_for("hybrid", fusion) for fusion in grid}
    default = Fusion(**{**KnowledgeConfig().fusion.__dict__, "depth": depth})
    if default not in by_setting:
        by_setting[default] = per_query_for("hybrid", default)
    report["hybrid_default"] = {
        "setting": default.__dict__,
        "ndcg10": mean(by_setting[default], ids, "ndcg10"),
        "recall100": mean(by_setting[default], ids, "recall100"),
    }
    report["hybrid_plain_rrf"] = {
        "ndcg10": mean(by_setting[grid[0]], ids, "ndcg10"),
        "recall100": mean(by_setting[grid[0]], ids, "recall100"),
    }
    report["hybrid_grid"] = [
        {"setting": f.__dict__, "ndcg10": mean(found, ids, "ndcg10")}
        for f, found in by_setting.items()
    ]
    shuffled = ids[:]
    random.Random(13).shuffle(shuffled)
    held_out: list[float] = []
    chosen = []
    for fold in range(folds):
        test = shuffled[fold::folds]
        train = [q for q in shuffled if q not in set(test)]
        best = max(by_setting, key=lambda f: mean(by_setting[f], train, "ndcg10"))
        chosen.append(best.__dict__)
        held_out.extend(by_setting[best][q]["ndcg10"] for q in test)
    report["hybrid_cross_validated"] = {
        "folds": folds,
        "held_out_ndcg10": round(statistics.fmean(held_out), 4),
        "chosen_per_fold": chosen,
    }
    return report


def lexical_engines(
    corpus: bytes, queries: list[dict[str, str]], qrels: dict[str, dict[str, int]]
) -> dict[str, Any]:
    """bm25s (Keel's terms) against SQLite FTS5 (porter stemming, bm25()) on whole
    abstracts: nDCG@10, build time and query p50 of each, on the same machine in one run."""
    import re
    import sqlite3

    rows = [json.loads(line) for line in corpus.splitlines()]
    ids = [row["_id"] for row in rows]
    texts = [f"{row['title']}\n{row['text']}" for row in rows]
    report: dict[str, Any] = {}
    database = sqlite3.connect(":memory:")
    database.execute("CREATE VIRTUAL TABLE t USING fts5(body, tokenize='porter unicode61')")
    started = time.perf_counter()
    database.executemany("INSERT INTO t(rowid, body) VALUES (?, ?)", enumerate(texts))
    build = time.perf_counter() - started
    runs: dict[str, dict[str, float]] = {}
    timings = []
    for query in queries:
        terms = re.findall(r"\w+", query["text"].lower())
        expression = " OR ".join(f'"{term}"' for term in terms)
        started = time.perf_counter()
        found = database.execute(
            "SELECT rowid, bm25(t) FROM t WHERE t MATCH ? ORDER BY bm25(t) LIMIT 100",
            (expression,),
        ).fetchall()
        timings.append((time.perf_counter() - started) * 1000)
        runs[query["_id"]] = {ids[rowid]: -score for rowid, score in found}
    scored = evaluate(runs, qrels)
    report["sqlite_fts5"] = {
        "ndcg10": mean(scored, list(runs), "ndcg10"),
        "build_s": round(build, 2),
        "query": _percentiles(timings),
    }
    started = time.perf_counter()
    lexical = LexicalIndex()
    lexical.build(texts)
    build = time.perf_counter() - started
    runs, timings = {}, []
    for query in queries:
        started = time.perf_counter()
        positions, scores = top_k(lexical.scores(query["text"]), 100)
        timings.append((time.perf_counter() - started) * 1000)
        runs[query["_id"]] = {ids[p]: float(v) for p, v in zip(positions, scores, strict=True)}
    scored = evaluate(runs, qrels)
    report["bm25s"] = {
        "ndcg10": mean(scored, list(runs), "ndcg10"),
        "build_s": round(build, 2),
        "query": _percentiles(timings),
    }
    return report


def synthetic_index(size: int, texts: list[str], dimension: int, seed: int = 7) -> KbIndex:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((size, dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    tokens = [words(text) for text in texts]  # chunks sampled from the corpus, with replacement
    picked = [i % len(tokens) for i in rng.permutation(size)]
    lexical = LexicalIndex()
    lexical.build_from_words([tokens[i] for i in picked])
    documents = {f"d{i}": {"source": f"s{i}", "metadata": {}} for i in range(size // 2 + 1)}
    return KbIndex(
        kb_id="synthetic",
        model="all-minilm-l6-v2",
        revision=0,
        chunk_ids=np.arange(size, dtype=np.int64),
        document_ids=[f"d{i // 2}" for i in range(size)],
        documents=documents,
        dense=DenseIndex(vectors),
        lexical=lexical,
        passages=[Passage(texts[i], 0, len(texts[i]), ()) for i in picked],
    )


async def latency(
    texts: list[str], queries: list[str], embedder: LocalEmbedder, sizes: list[int]
) -> dict[str, Any]:
    report: dict[str, Any] = {}
    embed_ms = []
    for query in queries[:50]:
        started = time.perf_counter()
        await embedder.embed([query])
        embed_ms.append((time.perf_counter() - started) * 1000)
    vectors = (await embedder.embed(queries[:100])).vectors
    report["query_embedding_ms"] = _percentiles(embed_ms)
    fusion = KnowledgeConfig().fusion
    for size in sizes:
        build_started = time.perf_counter()
        index = synthetic_index(size, texts, embedder.dimension)
        build_s = time.perf_counter() - build_started
        timings: dict[str, list[float]] = {"hybrid": [], "dense_exact": [], "lexical": []}
        for query, vector in zip(queries[:100], vectors, strict=True):
            started = time.perf_counter()
            fuse(index.dense.scores(vector), index.lexical.scores(query), fusion, 10)
            timings["hybrid"].append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            index.dense.search(vector, 10, mask=np.ones(size, dtype=np.bool_))
            timings["dense_exact"].append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            top_k(index.lexical.scores(query), 10)
            timings["lexical"].append((time.perf_counter() - started) * 1000)
        report[str(size)] = {
            "index_build_s": round(build_s, 2),
            **{name: _percentiles(values) for name, values in timings.items()},
            "memory_mb_vectors": round(index.dense.vectors.nbytes / 2**20, 1),
        }
    return report


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(ordered[len(ordered) // 2], 2),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 2),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--scifact", type=Path, default=DEFAULT_SCIFACT)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-quality", action="store_true", help="latency alone")
    parser.add_argument("--lexical-engines", action="store_true", help="bm25s against FTS5")
    parser.add_argument("--sizes", default="5000,100000")
    parser.add_argument("--shard", default=None, help="I/N: only embed part I of N (see shard)")
    parser.add_argument("--first-row", type=int, default=0, help="with --shard: skip rows")
    parser.add_argument("--vectors", type=Path, nargs="*", default=[], help="shard .npz files")
    args = parser.parse_args()
    if args.shard is not None:
        part, parts = (int(v) for v in args.shard.split("/"))
        corpus = (args.scifact / "corpus.jsonl").read_bytes()
        out = Path(f"/tmp/keel-kb-shard-{part}-of-{parts}.npz")
        await shard(corpus, part, parts, out, args.first_row)
        return
    cached: dict[str, np.ndarray] = {}
    for file in args.vectors:
        loaded = np.load(file)
        cached.update(zip(loaded["keys"].tolist(), loaded["vectors"], strict=True))
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="keel-kb-bench-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(f"sqlite:///{data_dir / 'keel.db'}")
    migrate.upgrade(database)
    KeyService(database).ensure_project(PROJECT)
    embedder = CountingEmbedder(LocalEmbedder("all-minilm-l6-v2", minilm_dir()), cached)
    counter = tokenizer_counter(minilm_dir() / "tokenizer.json")
    kbs = KnowledgeBases(database, data_dir, lambda: embedder, counter)
    corpus, queries, qrels = load_scifact(args.scifact)
    report: dict[str, Any] = {
        "bench": "knowledge",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_at_start": [round(v, 1) for v in os.getloadavg()],
    }
    if args.lexical_engines:
        report["lexical_engines_scifact_train"] = lexical_engines(corpus, queries, qrels)
    if not args.skip_quality:
        report["ingest"] = await ingest(kbs, corpus, embedder)
        index = kbs.index_for(kbs.get(PROJECT, KB))
        query_vectors = (await embedder.embed([q["text"] for q in queries])).vectors
        report["retrieval_scifact_train"] = quality(
            index, queries, query_vectors, qrels, args.folds
        )
    if not args.skip_latency:
        texts = [json.loads(line)["text"] for line in corpus.splitlines()]
        sizes = [int(size) for size in args.sizes.split(",")]
        report["latency"] = await latency(texts, [q["text"] for q in queries], embedder.inner,
                                          sizes)  # fmt: skip
    report["load_average_at_end"] = [round(v, 1) for v in os.getloadavg()]
    print(json.dumps(report, indent=2))
    embedder.close()
    database.dispose()


if __name__ == "__main__":
    asyncio.run(main())
