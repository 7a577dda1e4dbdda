"""Step 4: a chat request that names knowledge bases (`"kb": {"name": "handbook"}`) gets
their best passages as a numbered context, before the input guard reads it (injected
instructions arrive inside documents); the answer carries the citations, whole or as the
stream's last event before [DONE]. After the answer, its groundedness is scored in the
background and kept as a score on the trace: nothing the client waits for.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from keel.calls import Call, CallState
from keel.errors import GuardrailViolation, InvalidRequest, ServiceUnavailable
from keel.knowledge.grounding import AlignmentScorer, GroundednessScorer
from keel.knowledge.rag import Retrieval, merge, parse_request, question, seal, with_context
from keel.knowledge.service import KnowledgeBases

log = logging.getLogger("keel.gateway")
SaveScore = Callable[[str, str, dict[str, Any]], Any]  # (project, trace id, score fields)
MAX_PENDING = 64  # answers waiting to be scored; beyond it they are counted and skipped


class Retrieve:
    def __init__(self, knowledge: KnowledgeBases | None):
        self.knowledge = knowledge

    async def run(self, call: Call, state: CallState) -> None:
        raw = state.body.get("kb")
        if raw is None:
            return
        if call.op != "chat/completions":
            raise InvalidRequest(
                "kb works with chat completions only; send the request to /v1/chat/completions",
                param="kb",
            )
        request = parse_request(raw)
        if self.knowledge is None:
            raise ServiceUnavailable("knowledge bases are not served by this gateway")
        messages = state.body.get("messages")
        query = question(messages)
        if not query:
            raise InvalidRequest(
                "kb needs a user message to search for; add one with text content",
                param="messages",
            )
        span = state.begin("retrieve")
        project = call.principal.project_id
        found = await asyncio.gather(
            *(
                self.knowledge.search(
                    project,
                    name,
                    query,
                    request.top_k,
                    request.filters,
                    request.mode,
                    request.rerank,
                )
                for name in request.bases
            )
        )
        retrieval = Retrieval(request, query, merge(list(zip(request.bases, found, strict=True)),
                                                    request.top_k))  # fmt: skip
        body = {key: value for key, value in state.body.items() if key != "kb"}
        assert isinstance(messages, list)
        body["messages"] = with_context(messages, retrieval.passages)
        state.body, state.retrieval = body, retrieval
        if span is not None:
            span.attributes = {
                "keel.knowledge.bases": list(request.bases),
                "keel.knowledge.mode": request.mode,
                "keel.knowledge.top_k": request.top_k,
                "keel.knowledge.chunk_ids": [p.hit.chunk_id for p in retrieval.passages],
                "keel.knowledge.scores": [p.hit.score for p in retrieval.passages],
            }
        state.end(span)


def seal_context(state: CallState) -> None:
    """After the input guard read the sources as a document: fold them into the system
    message, the only shape every upstream takes."""
    if state.retrieval is not None and isinstance(state.body.get("messages"), list):
        state.body = {**state.body, "messages": seal(state.body["messages"])}


def answer_text(state: CallState) -> str:
    """The first choice's text as the trace keeps it (whole: choices; stream: text pieces)."""
    output = state.output
    if isinstance(output, list) and output and isinstance(output[0], str):
        return "".join(output)
    if isinstance(output, list) and output and isinstance(output[0], dict):
        message = output[0].get("message")
        content = message.get("content") if isinstance(message, dict) else None
        return content if isinstance(content, str) else ""
    return ""


def cite(body: dict[str, Any], state: CallState) -> None:
    """A whole answer's `citations` field (each marked `cited` when the text names it)."""
    if state.retrieval is None:
        return
    choices = body.get("choices") or [{}]
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    text = message.get("content") if isinstance(message, dict) else None
    body["citations"] = state.retrieval.citations(text if isinstance(text, str) else "")


def citations_event(state: CallState, chunk_id: str, created: int, text: str) -> dict[str, Any]:
    """A stream's last chunk before [DONE]: no choices (as the usage chunk), the citations
    (`text`: the streamed answer, for which of them it cites)."""
    retrieval: Retrieval = state.retrieval
    return {"id": chunk_id, "object": "chat.completion.chunk", "created": created,
            "model": state.model, "choices": [],
            "citations": retrieval.citations(text)}  # fmt: skip


class Ground:
    """Scores RAG answers in the background, one at a time, and saves each on its trace."""

    def __init__(self, knowledge: KnowledgeBases, save: SaveScore,
                 scorer: GroundednessScorer | None = None) -> None:  # fmt: skip
        self.knowledge, self.save, self._scorer = knowledge, save, scorer
        self._queue: asyncio.Queue[tuple[str, str, str, list[str]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self.skipped = 0  # answers not scored because the queue was full
        self.failed = 0
        self._scored: set[str] = set()
        self._saves: set[asyncio.Task[Any]] = set()  # traces scored before answering (wait, block)

    def scorer(self) -> GroundednessScorer:
        if self._scorer is None:
            self._scorer = AlignmentScorer(self.knowledge.embedder())
        return self._scorer

    def submit(self, call: Call, state: CallState) -> None:
        """Queue a finished RAG answer for scoring (never waits)."""
        retrieval: Retrieval | None = state.retrieval
        text = answer_text(state)
        if call.trace_id in self._scored:
            self._scored.discard(call.trace_id)
            return
        if retrieval is None or state.error is not None or not call.trace_id or not text:
            return
        if self._queue is None:
            self._queue = asyncio.Queue(MAX_PENDING)
        try:
            self._queue.put_nowait((call.principal.project_id, call.trace_id, text,
                                    retrieval.texts()))  # fmt: skip
        except asyncio.QueueFull:
            self.skipped += 1
            return
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        assert self._queue is not None
        while not self._queue.empty():
            project, trace_id, text, contexts = self._queue.get_nowait()
            try:
                await self._score(project, trace_id, text, contexts)
            except Exception:  # a scorer that fails costs that answer's score, counted
                self.failed += 1
                log.exception("scoring the groundedness of trace %s failed", trace_id)

    async def check(self, call: Call, state: CallState, body: dict[str, Any],
                    headers: dict[str, str]) -> None:  # fmt: skip
        """A whole answer whose request asked to wait for its groundedness: scored now, in
        the body and a header, kept on the trace; with `block`, an ungrounded one refused."""
        retrieval: Retrieval | None = state.retrieval
        if retrieval is None or retrieval.request.groundedness == "background":
            return
        choices = body.get("choices") or [{}]
        message = choices[0].get("message") if isinstance(choices[0], dict) else None
        text = message.get("content") if isinstance(message, dict) else None
        if not isinstance(text, str) or not text.strip():
            return
        result = await self.scorer().score(text, retrieval.texts())
        unsupported = [s.text for s in result.unsupported][:20]
        score = round(float(result.score), 4)
        body["groundedness"] = {
            "score": score,
            "grounded": result.grounded,
            "unsupported": unsupported,
        }
        headers["X-Keel-Groundedness"] = f"{result.score:.3f}"
        if call.trace_id:
            self._scored.add(call.trace_id)
            fields = self._fields(result.score, result.grounded, unsupported)
            task = asyncio.get_running_loop().create_task(
                asyncio.to_thread(self.save, call.principal.project_id, call.trace_id, fields)
            )
            self._saves.add(task)
            task.add_done_callback(self._saves.discard)
        if retrieval.request.groundedness == "block" and not result.grounded:
            raise GuardrailViolation(
                f"the answer was blocked: {len(result.unsupported)} of its sentences are not "
                f"supported by the retrieved sources (groundedness {result.score:.2f}); "
                "rephrase the question, or ask with kb.groundedness 'wait' to see the answer",
                code="ungrounded",
            )

    def _fields(self, number: float, grounded: bool, unsupported: list[str]) -> dict[str, Any]:
        return {
            "name": "groundedness",
            "kind": "numeric",
            "number": round(float(number), 4),
            "flag": None,
            "label": "grounded" if grounded else "ungrounded",
            "comment": json.dumps({"grounded": grounded, "unsupported": unsupported}),
            "source": "evaluator",
            "author": f"keel:{self.scorer().name}",
        }

    async def _score(self, project: str, trace_id: str, text: str, contexts: list[str]) -> None:
        result = await self.scorer().score(text, contexts)
        unsupported = [s.text for s in result.unsupported][:20]
        score = self._fields(result.score, result.grounded, unsupported)
        await asyncio.to_thread(self.save, project, trace_id, score)

    async def idle(self) -> None:
        """Wait until every queued answer is scored (for shutdown and tests)."""
        if self._worker is not None:
            await asyncio.shield(self._worker)
