"""Embedding of traffic in the background: the recorder offers each finished trace; a sample
of them waits in a bounded queue and a worker embeds and stores them in batches.

`offer()` is all the request path sees: a random draw and an append. The text embedded is
the last user turn of the body the trace keeps, which is the guard's redacted form when the
guard anonymised it (gateway/steps/guard.py), so raw PII never reaches the vectors' table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from keel.embeddings.base import ApproximateEmbedder, BackgroundEmbedder, Embedder
from keel.insights.store import InsightStore
from keel.tracing.model import RequestTrace

log = logging.getLogger("keel.insights")

MAX_TEXT = 2000  # characters of a request kept (shown in the console, labels topics)
# Characters embedded: about 128 tokens. The start of a last user turn says what it is about;
# MiniLM would read up to 256 tokens, at more than twice the cost for a long request.
EMBED_TEXT = 600
MAX_ANSWER = 1000
OPS = ("chat/completions", "completions")


def last_user_turn(op: str, body: dict[str, Any]) -> str | None:
    """The text a person typed last: the last user message, or a completion's prompt."""
    if op == "completions":
        prompt = body.get("prompt")
        return prompt if isinstance(prompt, str) and prompt.strip() else None
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):  # content parts: the text ones, joined
            content = " ".join(
                p.get("text", "")
                for p in content
                if isinstance(p, dict) and p.get("type") == "text"
            )
        return content if isinstance(content, str) and content.strip() else None
    return None


def answer_text(output: Any) -> str | None:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        parts = []
        for piece in output:
            if isinstance(piece, str):
                parts.append(piece)
            elif isinstance(piece, dict):
                message = piece.get("message")
                text = message.get("content") if isinstance(message, dict) else piece.get("text")
                if isinstance(text, str):
                    parts.append(text)
        return "".join(parts) or None
    return None


class TrafficEmbedder:
    def __init__(
        self,
        store: InsightStore,
        embedder: Callable[[], Embedder | None],
        *,
        sample_rate: float = 1.0,
        queue_size: int = 10_000,
        batch_size: int = 64,
        interval: float = 0.5,
        draw: Callable[[], float] = random.random,
    ):
        self.store = store
        self._embedder = embedder
        self.sample_rate = sample_rate
        self._queue: deque[RequestTrace] = deque()
        self._queue_size = queue_size
        self._batch_size = batch_size
        self._interval = interval
        self._draw = draw
        self._task: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # the worker's, once started
        self._wakeup: asyncio.Event | None = None
        self.embedded = 0
        self.dropped = 0

    # -- the request path: never waits, never raises -------------------------------------

    def offer(self, trace: RequestTrace) -> None:
        if trace.op not in OPS or self.sample_rate <= 0:
            return
        if self.sample_rate < 1 and self._draw() >= self.sample_rate:
            return
        if len(self._queue) >= self._queue_size:
            self.dropped += 1
            return
        self._queue.append(trace)
        if self._task is None:
            self.start()
        elif len(self._queue) >= self._batch_size and self._wakeup is not None:
            self._wakeup.set()

    def depth(self) -> int:
        return len(self._queue)

    # -- the worker ----------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self.loop = asyncio.get_running_loop()
            self._wakeup = asyncio.Event()
            self._task = self.loop.create_task(self._run(), name="insights")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def flush(self) -> None:
        """Embed and store everything queued so far (tests, shutdown)."""
        while self._queue:
            await self._process(self._take())

    def _take(self) -> list[RequestTrace]:
        return [self._queue.popleft() for _ in range(min(self._batch_size, len(self._queue)))]

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            if len(self._queue) < self._batch_size:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval):
                        await self._wakeup.wait()
            if not self._queue:
                continue
            try:
                await self._process(self._take())
            except Exception:  # counted: these requests are not embedded
                log.warning("insights: could not embed a batch of traffic", exc_info=True)
                await asyncio.sleep(self._interval)

    async def _process(self, batch: list[RequestTrace]) -> None:
        embedder = self._embedder()
        if embedder is None:
            self.dropped += len(batch)
            return
        picked = []
        for trace in batch:
            text = last_user_turn(trace.op, trace.body)
            if text is not None:
                picked.append((trace, text[:MAX_TEXT]))
        if not picked:
            return
        # Traffic is grouped and compared, never indexed: the faster, near-identical vectors
        # (cosine >= 0.999 to the exact ones) do, where the embedder has them; on its
        # background worker where it has one, whose lowered priority yields the CPU to the
        # requests the gateway is serving.
        if isinstance(embedder, BackgroundEmbedder):
            embed = embedder.embed_background
        elif isinstance(embedder, ApproximateEmbedder):
            embed = embedder.embed_approximate
        else:
            embed = embedder.embed
        try:
            result = await embed([text[:EMBED_TEXT] for _, text in picked])
        except Exception:
            self.dropped += len(picked)
            raise
        # Rows are built in the writing thread, not here on the event loop serving requests.
        try:
            written = await asyncio.to_thread(self._write, picked, result.vectors)
        except Exception:  # the store refused the batch: counted, then logged by the worker
            self.dropped += len(picked)
            raise
        self.embedded += written

    def _write(self, picked: list[tuple[RequestTrace, str]], vectors: Any) -> int:
        rows = []
        for (trace, text), vector in zip(picked, vectors, strict=True):
            answer = answer_text(trace.output)
            rows.append(
                {
                    "trace_id": trace.trace_id,
                    "project_id": trace.principal.project_id,
                    "start_us": trace.start_ns // 1000,
                    "route": trace.route,
                    "text": text,
                    "answer": answer[:MAX_ANSWER] if answer else None,
                    "vector": np.asarray(vector, dtype=np.float32).tobytes(),
                    "cost": trace.cost,
                    "duration_ms": (trace.end_ns - trace.start_ns) / 1e6 if trace.end_ns else 0.0,
                    "error": trace.error is not None,
                }
            )
        self.store.write(rows)
        return len(rows)


def now_us() -> int:
    return time.time_ns() // 1000
