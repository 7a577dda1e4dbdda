"""A folder of mixed formats ingested as a job: files/s and chunks/s, then the same folder
again (nothing to embed). Prints JSON.

    .venv/bin/python bench/knowledge_ingest.py [--files 200] [--concurrency 4]

Builds --files documents in equal shares of .md, .txt, .html, .pdf, .docx and .csv (each a
few hundred words of synthesised prose under headings), stages them as the API does (each
parsed once to check it), and runs one `kb.ingest` job through the local executor with the
real SQLite store and the bundled MiniLM. The second run stages the same files and reports
how many texts reached the model (0: unchanged documents are skipped by hash).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from keel.auth.keys import KeyService
from keel.deploy.bundled import minilm_dir
from keel.embeddings.base import EmbeddingResult
from keel.embeddings.local import LocalEmbedder
from keel.jobs.executor import ExecutorOptions, LocalExecutor
from keel.jobs.files import FileStore
from keel.jobs.ingest import KIND, PURPOSE, IngestKind
from keel.jobs.store import JobStore
from keel.knowledge.chunk import tokenizer_counter
from keel.knowledge.parse import parse
from keel.knowledge.service import KnowledgeBases
from keel.store import migrate
from keel.store.db import Database

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.knowledge.samples import docx_bytes, pdf_bytes

WORDS = [
    "policy",
    "employee",
    "holiday",
    "request",
    "manager",
    "approval",
    "travel",
    "receipt",
    "budget",
    "quarter",
    "report",
    "security",
    "laptop",
    "password",
    "encryption",
    "access",
    "review",
    "incident",
    "customer",
    "contract",
    "renewal",
    "invoice",
    "payment",
    "supplier",
    "warehouse",
    "delivery",
    "schedule",
    "training",
    "onboarding",
    "benefit",
    "pension",
    "office",
    "parking",
    "meeting",
    "deadline",
    "project",
    "milestone",
    "risk",
    "audit",
    "compliance",
    "privacy",
    "data",
]


class CountingEmbedder:
    """The bundled MiniLM, counting the texts it was asked to embed."""

    def __init__(self, inner: LocalEmbedder):
        self.inner, self.name, self.dimension = inner, inner.name, inner.dimension
        self.error: str | None = None
        self.texts = 0

    @property
    def ready(self) -> bool:
        return self.inner.ready

    def start_loading(self) -> None:
        self.inner.start_loading()

    async def embed(self, texts: list[str]) -> EmbeddingResult:
        self.texts += len(texts)
        return await self.inner.embed(texts)

    def close(self) -> None:
        self.inner.close()


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(8, 18))]
    return " ".join(words).capitalize() + f" within {rng.randint(2, 90)} days."


def _sections(rng: random.Random) -> dict[str, list[str]]:
    return {
        f"Section {n} {rng.choice(WORDS)}": [
            " ".join(_sentence(rng) for _ in range(rng.randint(3, 6)))
            for _ in range(rng.randint(2, 4))
        ]
        for n in range(1, rng.randint(3, 5))
    }


def document(kind: str, number: int, rng: random.Random) -> tuple[str, bytes]:
    title = f"Document {number} on {rng.choice(WORDS)}"
    sections = _sections(rng)
    if kind == "md":
        text = f"# {title}\n\n" + "".join(
            f"## {head}\n\n" + "\n\n".join(paragraphs) + "\n\n"
            for head, paragraphs in sections.items()
        )
        return f"md/doc{number}.md", text.encode()
    if kind == "txt":
        text = title + "\n\n" + "\n\n".join(p for ps in sections.values() for p in ps)
        return f"txt/doc{number}.txt", text.encode()
    if kind == "html":
        body = "".join(
            f"<h2>{head}</h2>" + "".join(f"<p>{p}</p>" for p in paragraphs)
            for head, paragraphs in sections.items()
        )
        page = f"<html><head><title>{title}</title></head><body><h1>{title}</h1>{body}</body>"
        return f"html/doc{number}.html", (page + "</html>").encode()
    if kind == "pdf":
        lines = [title] + [s for ps in sections.values() for p in ps for s in p.split(". ")]
        return f"pdf/doc{number}.pdf", pdf_bytes(lines[:45])
    if kind == "docx":
        return f"docx/doc{number}.docx", docx_bytes(title, sections)
    rows = ["id,topic,text"] + [
        f"{number}-{i},{rng.choice(WORDS)},{_sentence(rng)}" for i in range(rng.randint(4, 8))
    ]
    return f"csv/doc{number}.csv", ("\n".join(rows) + "\n").encode()


def folder(count: int, seed: int = 11) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    kinds = ("md", "txt", "html", "pdf", "docx", "csv")
    return [document(kinds[n % len(kinds)], n, rng) for n in range(count)]


async def run_job(
    kbs: KnowledgeBases, store: JobStore, files: FileStore, documents: list[tuple[str, bytes]],
    concurrency: int,
) -> dict[str, Any]:  # fmt: skip
    """Stage the documents as the API does, then one job ingests them; returns timings."""
    start = time.perf_counter()
    items = []
    for source, data in documents:
        parsed = await asyncio.to_thread(parse, source, data, None)
        info = await asyncio.to_thread(files.create, "default", "bench", PURPOSE, source, data,
                                       len(parsed))  # fmt: skip
        items.append((source, {"file_id": info.id, "metadata": None}))
    staged = time.perf_counter() - start
    job = await asyncio.to_thread(store.create, KIND, "default", "bench", {"kb": "folder"}, items)
    options = ExecutorOptions(concurrency=concurrency, poll_seconds=0.05)
    executor = LocalExecutor(store, {KIND: IngestKind(kbs, store, files)}, options)
    started = time.perf_counter()
    await executor.start()
    while True:
        current = await asyncio.to_thread(store.get, job.id)
        assert current is not None
        if current.final:
            break
        await asyncio.sleep(0.05)
    took = time.perf_counter() - started
    await executor.stop()
    return {"job": current.id, "state": current.state, "result": current.result,
            "stage_s": round(staged, 2), "job_s": round(took, 2),
            "files_per_s": round(len(documents) / took, 1),
            "chunks_per_s": round(current.result.get("chunks", 0) / took, 1)}  # fmt: skip


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4, help="items in flight at once")
    args = parser.parse_args()
    documents = folder(args.files)
    with tempfile.TemporaryDirectory() as tmp:
        database = Database(f"sqlite:///{tmp}/keel.db")
        migrate.upgrade(database)
        KeyService(database).ensure_project("default")
        embedder = CountingEmbedder(LocalEmbedder("all-minilm-l6-v2", minilm_dir()))
        counter = tokenizer_counter(minilm_dir() / "tokenizer.json")
        kbs = KnowledgeBases(database, Path(tmp), lambda: embedder, counter)
        kbs.create("default", "folder", actor="bench")
        store, files = JobStore(database), FileStore(database)
        await embedder.embed(["warm up"])
        embedder.texts = 0
        first = await run_job(kbs, store, files, documents, args.concurrency)
        first["texts_embedded"], embedder.texts = embedder.texts, 0
        again = await run_job(kbs, store, files, documents, args.concurrency)
        again["texts_embedded"] = embedder.texts
        embedder.close()
        database.dispose()
    kinds: dict[str, int] = {}
    for source, _ in documents:
        kinds[source.rsplit(".", 1)[1]] = kinds.get(source.rsplit(".", 1)[1], 0) + 1
    print(json.dumps({
        "bench": "knowledge_ingest", "files": len(documents), "formats": kinds,
        "bytes": sum(len(data) for _, data in documents), "concurrency": args.concurrency,
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "first": first, "unchanged_again": again,
        "ratio_first_over_again_s": round(first["job_s"] / max(again["job_s"], 1e-6), 1),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
