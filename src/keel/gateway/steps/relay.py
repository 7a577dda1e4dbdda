"""Step 8 for streams: the upstream's events relayed to the client as they come, through
the stream's output guard (step 9), assembled for the cache (step 10) when it ends.

Nothing retries here: the first byte went out. An error mid-stream travels as a last
event (as OpenAI does). Ending early (an error, a client that left) still counts the text
that went out, so the settlement charges what was generated.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator
from typing import Any

import orjson

from keel.cache.config import CacheScope
from keel.cache.sse import CompletionAssembler
from keel.calls import Call, CallState
from keel.cost import cost
from keel.errors import KeelError
from keel.gateway.steps.cache import CacheStore
from keel.gateway.steps.guard import StreamGuard
from keel.gateway.steps.retrieve import citations_event
from keel.providers.base import Operation, ProviderStream, Usage
from keel.routing.table import Target

DONE = b"data: [DONE]\n\n"


def sse(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def _chunk_text(op: Operation, chunk: dict[str, Any]) -> str:
    parts: list[str] = []
    for choice in chunk.get("choices") or ():
        if op == "chat/completions":
            content = (choice.get("delta") or {}).get("content")
        else:
            content = choice.get("text")
        if isinstance(content, str):
            parts.append(content)
    return "".join(parts)


def _guard_chunk(guard: StreamGuard, op: Operation, chunk: dict[str, Any]) -> bool:
    """Put each choice's text through the stream's output guard; False: nothing to send.

    A choice that ends (finish_reason) releases the rest of its text with it.
    """
    kept = []
    for choice in chunk["choices"]:
        index = int(choice.get("index") or 0)
        delta = choice.get("delta") if op == "chat/completions" else None
        piece = (delta or {}).get("content") if op == "chat/completions" else choice.get("text")
        released = guard.feed(index, piece) if isinstance(piece, str) and piece else ""
        if choice.get("finish_reason") is not None:
            released += guard.finish(index)
        if op == "chat/completions":
            if delta is not None and (released or "content" in delta):
                delta["content"] = released
            other = delta is not None and any(k != "content" for k in delta)
            if released or other or choice.get("finish_reason") is not None:
                kept.append(choice)
        else:
            choice["text"] = released
            if released or choice.get("finish_reason") is not None:
                kept.append(choice)
    chunk["choices"] = kept
    return bool(kept)


class Relay:
    """One stream's relay; `run` yields the bytes for the client, read by read."""

    __slots__ = ("assembler", "call", "chunk_id", "created", "guard", "kind", "op",
                 "payload", "scope", "state", "store", "target", "text", "upstream")  # fmt: skip

    def __init__(self, call: Call, state: CallState, target: Target, payload: dict[str, Any],
                 upstream: ProviderStream, scope: CacheScope | None,
                 store: CacheStore | None) -> None:  # fmt: skip
        assert call.op != "embeddings"
        self.call, self.state, self.op = call, state, call.op
        self.target, self.payload, self.upstream = target, payload, upstream
        self.scope, self.store = scope, store
        self.assembler = CompletionAssembler() if scope is not None else None
        self.guard: StreamGuard | None = state.guard.stream() if state.guard is not None else None
        self.text: list[str] = []
        self.chunk_id, self.created = "", int(time.time())
        self.kind = "chat.completion.chunk" if self.op == "chat/completions" else "text_completion"

    async def run(self) -> AsyncGenerator[bytes, None]:
        out: list[bytes] = []  # events for the client that came in the same upstream read
        upstream, state = self.upstream, self.state
        try:
            async for chunk in upstream:
                self._take(chunk, out)
                if out and not upstream.buffered():
                    # What arrived in one read goes out in one write (one syscall, one
                    # packet); nothing waits for an event that has not arrived yet.
                    yield b"".join(out)
                    out.clear()
            await self._finish(out)
            yield b"".join(out)
            self._store()
        except KeelError as exc:
            state.error = exc
            # Headers went out already: the error travels as a last event (as OpenAI does).
            yield b"".join(out) + sse(exc.envelope())
        finally:
            await self._close()

    def _take(self, chunk: dict[str, Any], out: list[bytes]) -> None:
        """One upstream chunk: usage noted, text guarded, the event queued for the client."""
        state = self.state
        self.chunk_id = chunk.get("id", self.chunk_id)
        self.created = chunk.get("created", self.created)
        reported = chunk.get("usage")
        if isinstance(reported, dict) and "completion_tokens" in reported:
            state.usage = Usage(reported["prompt_tokens"], reported["completion_tokens"])
        if self.assembler is not None:
            self.assembler.add(chunk)  # what the upstream said, for the cache
        if not chunk.get("choices"):
            return  # a usage-only chunk: re-emitted at the end if the client asked
        chunk.pop("usage", None)
        self.text.append(_chunk_text(self.op, chunk))
        # The output guard may hold this text back until it has been scanned.
        if self.guard is None or _guard_chunk(self.guard, self.op, chunk):
            self._sent(chunk)  # before the rename: keeps the upstream's model
            chunk["model"] = state.model
            out.append(sse(chunk))

    def _sent(self, chunk: dict[str, Any]) -> None:
        state = self.state
        if state.first_token_ns is None:
            state.first_token_ns = time.time_ns()
            model = chunk.get("model")
            state.response_model = model if isinstance(model, str) else None
        state.last_chunk = chunk

    async def _finish(self, out: list[bytes]) -> None:
        """The upstream ended: the guard's held text, usage if asked, then [DONE]."""
        state = self.state
        if self.guard is not None:
            for index, rest in self.guard.finish_all().items():
                if rest:
                    chunk = self._text_chunk(index, rest)
                    self._sent(chunk)
                    out.append(sse(chunk))
        if state.usage is None and (
            state.wants_usage or state.settlement is not None or state.trace is not None
        ):
            state.usage = await self._count()
        if state.wants_usage and state.usage is not None:
            usage = state.usage.as_dict()
            out.append(sse({"id": self.chunk_id, "object": self.kind, "created": self.created,
                            "model": state.model, "choices": [], "usage": usage}))  # fmt: skip
        if state.retrieval is not None:
            text = "".join(self.guard.recorded if self.guard is not None else self.text)
            out.append(sse(citations_event(state, self.chunk_id, self.created, text)))
        out.append(DONE)

    def _text_chunk(self, index: int, text: str) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": index, "finish_reason": None}
        if self.op == "chat/completions":
            choice["delta"] = {"content": text}
        else:
            choice["text"] = text
        return {"id": self.chunk_id, "object": self.kind, "created": self.created,
                "model": self.state.model, "choices": [choice]}  # fmt: skip

    async def _count(self) -> Usage:
        return await self.target.provider.count_usage(self.op, self.payload, "".join(self.text))

    def _store(self) -> None:
        """Step 10: keep the whole stream's answer (not when a choice never finished)."""
        if self.assembler is None or self.scope is None or self.store is None:
            return
        stored = self.assembler.completion()
        if stored is None:
            return
        usage = self.state.usage
        if usage is not None:
            stored["usage"] = usage.as_dict()
        latency_ms = (time.time_ns() - self.state.started_ns) / 1e6
        spent = cost(self.target, usage) if usage is not None else None
        self.store.run(self.scope, self.state, stored, spent, latency_ms)

    async def _close(self) -> None:
        """However the stream ended: the upstream closed, the guard's verdicts kept, the
        answer noted for the trace, and text cut short counted."""
        state = self.state
        with contextlib.suppress(Exception):
            await self.upstream.aclose()
        if self.guard is not None:
            self.guard.close()
        state.output = self.guard.recorded if self.guard is not None else self.text
        if state.usage is None and self.text and state.settlement is not None:
            with contextlib.suppress(Exception):
                state.usage = await self._count()
        if state.usage is not None:
            state.cost = cost(self.target, state.usage)
