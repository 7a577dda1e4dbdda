"""The latency a knowledge base adds to a chat answer: RAG against plain chat, side by side
in one run, through a real `keel serve` in front of the stub upstream. Prints JSON.

    .venv/bin/python bench/knowledge_rag.py [--chunks 5000] [--requests 300] [--top-k 5]
        [--scifact ../shared/data/retrieval/scifact]

1. A base of at least --chunks chunks is written before Keel starts: SciFact abstracts as
   `corpus.jsonl` rows (real text, so BM25 is real), chunked by the real tokenizer; the
   chunk vectors are synthesised unit vectors under the bundled model's name (their values
   do not change how long a search takes, and embedding 5k chunks would take minutes).
2. `keel serve` (bundled MiniLM on, no local chat model) answers from bench/stub.py.
3. Requests alternate, one at a time: a plain chat call, then the same question with
   `"kb": {"name": "bench", "top_k": K}` (hybrid: the question embedded by MiniLM, BM25,
   fusion, the context built and guarded, citations). Each pair is one sample of the added
   latency; p50/p95 of both and of the per-pair difference are reported.

Groundedness is scored in the background after each RAG answer, as by default: on a busy
two-core machine that work competes with the next requests, and is part of the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from keel.auth.keys import KeyService
from keel.deploy.bundled import minilm_dir
from keel.embeddings.base import EmbeddingResult
from keel.knowledge.chunk import tokenizer_counter
from keel.knowledge.service import KnowledgeBases
from keel.store import migrate
from keel.store.db import Database
from overhead import (
    BenchError,
    Children,
    children,
    cpu_seconds,
    free_port,
    start_stub,
    wait_until_ready,
)

HERE = Path(__file__).resolve().parent
DEFAULT_SCIFACT = HERE.parent.parent / "shared" / "data" / "retrieval" / "scifact"
MODEL = "all-minilm-l6-v2"  # the bundled embedder's name: the served model searches the base


class SynthesisedVectors:
    """Unit vectors from a seeded generator under the bundled model's name and dimension."""

    name = MODEL
    dimension = 384
    error: str | None = None
    ready = True

    def __init__(self) -> None:
        self._random = np.random.default_rng(7)

    def start_loading(self) -> None:
        pass

    async def embed(self, texts: list[str]) -> EmbeddingResult:
        vectors = self._random.standard_normal((len(texts), self.dimension)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return EmbeddingResult(vectors, prompt_tokens=0)

    def close(self) -> None:
        pass


async def write_base(data_dir: Path, lines: list[bytes], chunks: int) -> int:
    database = Database(f"sqlite:///{data_dir / 'keel.db'}")
    migrate.upgrade(database)
    KeyService(database).ensure_project("default")
    embedder = SynthesisedVectors()
    counter = tokenizer_counter(minilm_dir() / "tokenizer.json")
    kbs = KnowledgeBases(database, data_dir, lambda: embedder, counter)
    kbs.create("default", "bench", actor="bench")
    first = 0
    while kbs.get("default", "bench").chunks < chunks and first < len(lines):
        part = b"".join(lines[first : first + 500])
        await kbs.ingest("default", "bench", f"corpus-{first}.jsonl", part, actor="bench")
        first += 500
    total = kbs.get("default", "bench").chunks
    database.dispose()
    return total


def start_keel(running: Children, data_dir: Path, stub_url: str) -> tuple[str, str]:
    config = data_dir / "keel.yaml"
    config.write_text(f"upstreams:\n  - name: stub\n    base_url: {stub_url}\n    models: [stub]\n")
    port = free_port()
    keel = Path(sys.executable).with_name("keel")
    argv = [str(keel), "serve", "--no-local-model", "--port", str(port)]
    argv += ["--data-dir", str(data_dir), "--config", str(config), "--log-level", "warning"]
    env = {key: value for key, value in os.environ.items() if not key.startswith("KEEL_")}
    running.start("keel", argv, env)
    base = f"http://127.0.0.1:{port}"
    wait_until_ready(running, "keel", f"{base}/healthz", also=data_dir / "admin.key")
    deadline = time.monotonic() + 120
    while httpx.get(f"{base}/readyz").status_code != 200:  # MiniLM loaded
        if time.monotonic() > deadline:
            raise BenchError("keel's embedding model was not ready after 120 s")
        time.sleep(0.2)
    return base, (data_dir / "admin.key").read_text().strip()


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(ordered[len(ordered) // 2], 2),
        "p95": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 2),
    }


def run(
    base: str, key: str, questions: list[str], requests: int, top_k: int, pid: int
) -> dict[str, Any]:
    plain, rag, added = [], [], []
    traces: list[str] = []
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=f"{base}/v1", headers=headers, timeout=60) as client:

        def ask(question: str, kb: dict[str, Any] | None) -> float:
            message = {"role": "user", "content": question}
            body: dict[str, Any] = {"model": "stub", "messages": [message]}
            if kb is not None:
                body["kb"] = kb
            started = time.perf_counter()
            response = client.post("/chat/completions", json=body)
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                raise BenchError(f"{response.status_code}: {response.text[:500]}")
            if kb is not None:
                if not response.json().get("citations"):
                    raise BenchError("a RAG answer came back without citations")
                traces.append(response.headers.get("X-Keel-Trace-Id", ""))
            return elapsed

        kb = {"name": "bench", "top_k": top_k}
        for question in questions[:20]:  # warm-up: connections, caches, the index in memory
            ask(question, None)
            ask(question, kb)
        for turn in range(requests):
            question = questions[turn % len(questions)]
            # Alternate which goes first, so neither always follows the other's leftovers.
            if turn % 2:
                a, b = ask(question, None), ask(question, kb)
            else:
                b, a = ask(question, kb), ask(question, None)
            plain.append(a)
            rag.append(b)
            added.append(b - a)
        spans = span_times(client, base, traces[-30:])
        # CPU time of the Keel process per request, each kind in a phase of its own (after a
        # RAG phase, until the background groundedness scoring is done): what the work costs
        # on a free core, which the machine's load inflates far less than wall-clock time.
        cpu: dict[str, float] = {}
        for name, kb_or_none in (("plain", None), ("rag", kb)):
            settle(pid)
            before = cpu_seconds(pid)
            for question in questions[: min(requests, 50)]:
                ask(question, kb_or_none)
            settle(pid)
            cpu[name] = round((cpu_seconds(pid) - before) * 1000 / min(requests, 50), 2)
    return {
        "plain_chat_ms": percentiles(plain),
        "rag_chat_ms": percentiles(rag),
        "added_ms_per_pair": percentiles(added),
        "added_p50_ms": round(percentiles(rag)["p50"] - percentiles(plain)["p50"], 2),
        "pairs": requests,
        "rag_span_ms_p50": spans,
        "keel_cpu_ms_per_request": cpu,
    }


def settle(pid: int) -> None:
    """Wait until the process has used no CPU for a second (background work drained)."""
    last = cpu_seconds(pid)
    for _ in range(120):
        time.sleep(1)
        now = cpu_seconds(pid)
        if now - last < 0.02:
            return
        last = now


def span_times(client: httpx.Client, base: str, trace_ids: list[str]) -> dict[str, float]:
    """Median duration of each step's span over the last RAG answers' traces: where the
    added time goes."""
    time.sleep(2)  # traces are written in the background
    found: dict[str, list[float]] = {}

    def walk(nodes: list[dict[str, Any]]) -> None:
        for node in nodes:
            found.setdefault(node["name"], []).append(float(node["duration_ms"]))
            walk(node.get("children", []))

    for trace_id in trace_ids:
        response = client.get(f"{base}/api/traces/{trace_id}")
        if response.status_code == 200:
            walk(response.json().get("spans", []))
    return {name: percentiles(values)["p50"] for name, values in sorted(found.items())}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scifact", type=Path, default=DEFAULT_SCIFACT)
    parser.add_argument("--chunks", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=300, help="pairs timed")
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args()
    questions = [json.loads(line)["text"] for line in (args.scifact / "queries.jsonl").open()]
    with tempfile.TemporaryDirectory(prefix="keel-rag-bench-") as folder:
        data_dir = Path(folder) / "keel"
        data_dir.mkdir()
        lines = (args.scifact / "corpus.jsonl").read_bytes().splitlines(keepends=True)
        chunks = await write_base(data_dir, lines, args.chunks)
        with children(Path(folder)) as running:
            stub = start_stub(running, 0.0)
            base, key = start_keel(running, data_dir, stub)
            load_before = os.getloadavg()
            found = run(base, key, questions, args.requests, args.top_k, running.pid("keel"))
        report = {
            "bench": "knowledge_rag",
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "chunks": chunks,
            "top_k": args.top_k,
            "mode": "hybrid",
            **found,
            "load_average": {
                "before": [round(v, 1) for v in load_before],
                "after": [round(v, 1) for v in os.getloadavg()],
            },
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
