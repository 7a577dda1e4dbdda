"""The request path, read top to bottom: resolve the model, call the provider, answer.

Authentication happens before (server/deps.py, called by the endpoint); later steps
(limits, prompts, guards, cache, routing, tracing) slot in here as explicit calls, never as
middleware.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from keel.auth.keys import Principal
from keel.cache.sse import CompletionAssembler, replay_sse
from keel.errors import KeelError
from keel.gateway.choices import send_choices
from keel.gateway.cost import cost
from keel.providers.base import Operation, ProviderResponse, ProviderStream, Usage
from keel.registry.catalog import ModelCatalog
from keel.routing.router import Router
from keel.routing.table import Route, Target
from keel.tracing.model import ClientDisconnected, RequestTrace, run_step, traced_attempts

if TYPE_CHECKING:
    from keel.cache.config import CacheScope
    from keel.cache.service import CacheHit
    from keel.gateway.cache import CacheStep
    from keel.gateway.disconnect import ClientWatch
    from keel.gateway.guard import RequestGuard, StreamGuard

_DONE = b"data: [DONE]\n\n"


def sse(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


class Settlement(Protocol):
    """Step 11, handed over by step 2 (admit): count what the request used, free its slots.

    Called once per admitted request, with `usage` None when there is no answer to count.
    """

    async def settle(self, target: Target | None, usage: Usage | None) -> None: ...

    def abandon(self) -> None:
        """Settle without usage, soon; for a stream the client never started reading."""
        ...


@dataclass(frozen=True, slots=True)
class GatewayRequest:
    """One validated client request, as the wire JSON the client sent (model included).

    Steps that change the request return a new one (dataclasses.replace); `headers` are
    X-Keel-* response headers that steps add (prompt used, route and target chosen, …);
    `client_headers` are the request's own (lower-case names), for steps that read them.
    """

    op: Operation
    body: dict[str, Any]
    principal: Principal
    trace_id: str
    headers: dict[str, str] = field(default_factory=dict)
    settlement: Settlement | None = None
    trace: RequestTrace | None = None  # step 10: what this request did, for the recorder
    client_headers: Mapping[str, str] = field(default_factory=dict)
    guard: RequestGuard | None = None  # set by step 4 (input guard) for step 8 (output guard)
    client: ClientWatch | None = None  # cancels the upstream call when the client leaves

    @property
    def model(self) -> str:
        return str(self.body["model"])

    @property
    def wants_usage(self) -> bool:
        options = self.body.get("stream_options") or {}
        return bool(options.get("include_usage"))


def upstream_payload(target: Target, request: GatewayRequest, stream: bool) -> dict[str, Any]:
    """The body sent upstream: the client's fields over the target's defaults, renamed."""
    payload = {**target.defaults, **request.body}
    payload["model"] = target.upstream_model
    if payload.get("max_completion_tokens") is not None:
        payload["max_tokens"] = payload["max_completion_tokens"]
    payload.pop("max_completion_tokens", None)
    payload.pop("stream_options", None)
    if stream:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    else:
        payload.pop("stream", None)
    return {key: value for key, value in payload.items() if value is not None}


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


def _text_chunk(
    request: GatewayRequest, kind: str, chunk_id: str, created: int, index: int, text: str
) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": index, "finish_reason": None}
    if request.op == "chat/completions":
        choice["delta"] = {"content": text}
    else:
        choice["text"] = text
    return {"id": chunk_id, "object": kind, "created": created, "model": request.model,
            "choices": [choice]}  # fmt: skip


def _upstream_call(request: GatewayRequest) -> AbstractContextManager[None]:
    """The scope of the upstream call: a client that leaves cancels it (ClientDisconnected)."""
    return request.client.cancelling() if request.client is not None else contextlib.nullcontext()


class RequestStep(Protocol):
    """A step that may rewrite the request before it is routed (e.g. prompt resolution)."""

    async def __call__(self, request: GatewayRequest) -> GatewayRequest: ...


class Gateway:
    def __init__(
        self,
        catalog: ModelCatalog,
        router: Router,
        prompts: RequestStep | None = None,
        admission: RequestStep | None = None,
        guard: RequestStep | None = None,
        cache: CacheStep | None = None,
    ):
        self.catalog = catalog
        self.router = router
        self.prompts = prompts
        self.admission = admission
        self.guard = guard
        self.cache = cache

    async def prepare(self, request: GatewayRequest) -> GatewayRequest:
        """Steps before routing: 3 resolve prompt, 2 admit, then 4 guard the input.

        Admission runs after the prompt is resolved, because a prompt may pick the model
        and max_tokens that scopes and limits are checked against; the guard runs after
        admission, so rate limits shield the scanners as well as the models.
        """
        if self.prompts is not None:
            request = await run_step(request.trace, "prompt", self.prompts, request)
        if self.admission is not None:
            request = await run_step(request.trace, "admit", self.admission, request)
        if self.guard is not None:
            try:
                request = await self.guard(request)
            except BaseException:
                if request.settlement is not None:
                    await request.settlement.settle(None, None)  # step 11: nothing to count
                raise
        return request

    def _route(self, request: GatewayRequest) -> Route:
        """Step 6: the model name to a route (a registry route, a version, or static)."""
        self.catalog.reject_embedder_for_chat(request.model)
        return self.router.resolve(request.principal.project_id, request.model)

    async def complete(self, request: GatewayRequest) -> dict[str, Any]:
        """A whole (non-streamed) completion, with the client's model name and usage.

        `request` has been through prepare().
        """
        try:
            return await self._complete(request)
        except BaseException:
            if request.settlement is not None:
                await request.settlement.settle(None, None)  # step 11: nothing to count
            raise

    async def _complete(self, request: GatewayRequest) -> dict[str, Any]:
        trace = request.trace
        started = time.perf_counter()
        route = self._route(request)
        scope, hit = await self._lookup(request, route)
        if hit is not None:
            body, _ = await self._answer_from(request, route, hit)
            return body
        route_step = trace.begin("route") if trace is not None else None

        async def call(target: Target) -> tuple[dict[str, Any], ProviderResponse]:
            payload = upstream_payload(target, request, stream=False)
            return payload, await send_choices(target.provider, request.op, payload)

        attempt = traced_attempts(trace, call)
        with _upstream_call(request):
            outcome = await self.router.run(
                route, request.principal, request.body.get("user"), attempt
            )
        if trace is not None and route_step is not None:
            trace.routed(route_step, outcome)
        request.headers.update(outcome.headers())
        payload, result = outcome.value
        body = result.body
        response_model = body.get("model")
        body["model"] = request.model
        usage = result.usage
        if usage is None:
            text = "".join(
                (c.get("message") or {}).get("content") or ""
                if request.op == "chat/completions"
                else c.get("text") or ""
                for c in body.get("choices", [])
            )
            usage = await outcome.target.provider.count_usage(request.op, payload, text)
        body["usage"] = usage.as_dict()
        recorded = body.get("choices")
        if request.guard is not None and isinstance(recorded, list):
            try:  # step 8: the output guard (the trace keeps the answer before restoration)
                recorded = await request.guard.answer(request.op, recorded)
            except KeelError:
                if trace is not None:
                    trace.answered(usage, response_model, None)
                if request.settlement is not None:  # tokens were used: count them (once)
                    await request.settlement.settle(outcome.target, usage)
                raise
        if trace is not None:
            trace.answered(usage, response_model, recorded)
        if scope is not None and self.cache is not None:  # step 9
            latency_ms = (time.perf_counter() - started) * 1000
            stored = {**body, "model": response_model, "choices": recorded}
            self.cache.store_later(scope, request, stored, cost(outcome.target, usage), latency_ms)
        if request.settlement is not None:
            await request.settlement.settle(outcome.target, usage)  # step 11
        return body

    async def _answer_from(
        self, request: GatewayRequest, route: Route, hit: CacheHit
    ) -> tuple[dict[str, Any], Any]:
        """A cache hit, through the output guard: (body for the client, choices to record).

        A hit costs no tokens: it settles with nothing to count.
        """
        body = hit.response
        recorded = body.get("choices")
        trace = request.trace
        request.headers["X-Keel-Route"] = route.name
        try:
            if request.guard is not None and isinstance(recorded, list):
                recorded = await request.guard.answer(request.op, recorded)
        finally:
            if request.settlement is not None:
                await request.settlement.settle(None, None)
        if trace is not None:
            trace.route = route.name
            trace.output = recorded
            model = body.get("model")
            trace.response_model = model if isinstance(model, str) else None
        body["model"] = request.model
        return body, recorded

    async def _lookup(
        self, request: GatewayRequest, route: Route
    ) -> tuple[CacheScope | None, CacheHit | None]:
        """Step 5: how the cache sees this request (None: not at all), and a stored answer."""
        if self.cache is None:
            return None, None
        scope = self.cache.scope(request, route)
        hit = await self.cache.lookup(request, scope) if scope is not None else None
        return scope, hit

    async def open_stream(self, request: GatewayRequest) -> AsyncIterator[bytes]:
        """Open the upstream stream now (so failures get a proper status), then relay it.

        Retries and fallbacks happen only here, before the first byte reaches the client.
        `request` has been through prepare().
        """
        try:
            events = await self._open_stream(request)
        except BaseException:
            if request.settlement is not None:
                await request.settlement.settle(None, None)
            raise
        if request.settlement is not None:
            # A stream that is never iterated never runs its `finally`: settle on collection.
            weakref.finalize(events, request.settlement.abandon)
        if request.trace is not None:  # the same for its trace (a no-op once it finished)
            weakref.finalize(events, request.trace.finish, ClientDisconnected())
        return events

    async def _open_stream(self, request: GatewayRequest) -> AsyncIterator[bytes]:
        trace = request.trace
        route = self._route(request)
        scope, hit = await self._lookup(request, route)
        if hit is not None:
            body, recorded = await self._answer_from(request, route, hit)
            return self._replay(request, body, recorded)
        route_step = trace.begin("route") if trace is not None else None

        async def call(target: Target) -> tuple[dict[str, Any], ProviderStream]:
            payload = upstream_payload(target, request, stream=True)
            return payload, await target.provider.open_stream(request.op, payload)

        attempt = traced_attempts(trace, call, keep_open=True)
        with _upstream_call(request):
            outcome = await self.router.run(
                route, request.principal, request.body.get("user"), attempt
            )
        if trace is not None and route_step is not None:
            trace.routed(route_step, outcome)
        request.headers.update(outcome.headers())
        payload, upstream = outcome.value
        return self._relay(request, outcome.target, payload, upstream, scope)

    async def _replay(
        self, request: GatewayRequest, body: dict[str, Any], recorded: Any
    ) -> AsyncIterator[bytes]:
        """A cached answer as the stream the client asked for (already guarded)."""
        trace, done = request.trace, False
        try:
            # All of it is on hand: one write, as the relay sends what arrived together.
            events = [event async for event in replay_sse(body, request.model, request.wants_usage)]
            if trace is not None and trace.first_token_ns is None:
                trace.first_token_ns = time.time_ns()
            yield b"".join(events)
            done = True
        finally:
            if trace is not None:
                trace.output = recorded
                trace.finish(None if done else ClientDisconnected())

    async def _relay(
        self,
        request: GatewayRequest,
        target: Target,
        payload: dict[str, Any],
        upstream: ProviderStream,
        scope: CacheScope | None = None,
    ) -> AsyncIterator[bytes]:
        started = time.perf_counter()
        assembler = CompletionAssembler() if scope is not None else None
        text: list[str] = []
        usage: Usage | None = None
        chunk_id, created = "", int(time.time())
        kind = "chat.completion.chunk" if request.op == "chat/completions" else "text_completion"
        trace, failure, done = request.trace, None, False
        guard = request.guard.stream() if request.guard is not None else None
        out: list[bytes] = []  # events for the client that came in the same upstream read
        try:
            async for chunk in upstream:
                last_of_read = not upstream.buffered()
                chunk_id = chunk.get("id", chunk_id)
                created = chunk.get("created", created)
                reported = chunk.get("usage")
                if isinstance(reported, dict) and "completion_tokens" in reported:
                    usage = Usage(reported["prompt_tokens"], reported["completion_tokens"])
                if assembler is not None:
                    assembler.add(chunk)  # what the upstream said, for step 9
                # A usage-only chunk has no choices: re-emitted below if the client asked.
                if chunk.get("choices"):
                    chunk.pop("usage", None)
                    text.append(_chunk_text(request.op, chunk))
                    # Step 8 may hold this text back until it has been scanned.
                    if guard is None or _guard_chunk(guard, request.op, chunk):
                        if trace is not None:
                            trace.chunk(chunk)  # before the rename: keeps the upstream's model
                        chunk["model"] = request.model
                        out.append(sse(chunk))
                if out and last_of_read:
                    # What arrived in one read goes out in one write (one syscall, one
                    # packet); nothing waits for an event that has not arrived yet.
                    yield b"".join(out)
                    out.clear()
            if guard is not None:
                for index, rest in guard.finish_all().items():
                    if rest:
                        chunk = _text_chunk(request, kind, chunk_id, created, index, rest)
                        if trace is not None:
                            trace.chunk(chunk)
                        out.append(sse(chunk))
            if usage is None and (request.wants_usage or request.settlement or trace):
                usage = await target.provider.count_usage(request.op, payload, "".join(text))
            if request.wants_usage and usage is not None:
                out.append(
                    sse(
                        {
                            "id": chunk_id,
                            "object": kind,
                            "created": created,
                            "model": request.model,
                            "choices": [],
                            "usage": usage.as_dict(),
                        }
                    )
                )
            out.append(_DONE)
            yield b"".join(out)
            out.clear()
            done = True
            if assembler is not None and scope is not None and self.cache is not None:
                stored = assembler.completion()  # None when a choice never finished
                if stored is not None:
                    if usage is not None:
                        stored["usage"] = usage.as_dict()
                    latency_ms = (time.perf_counter() - started) * 1000
                    spent = cost(target, usage) if usage is not None else None
                    self.cache.store_later(scope, request, stored, spent, latency_ms)
        except KeelError as exc:
            failure = exc
            # Headers went out already: the error travels as a last event (as OpenAI does).
            yield b"".join(out) + sse(exc.envelope())
        finally:
            with contextlib.suppress(Exception):
                await upstream.aclose()
            if guard is not None:
                guard.close()
            if trace is not None:
                recorded = guard.recorded if guard is not None else text
                trace.streamed(recorded, usage, None if done else failure or ClientDisconnected())
            if request.settlement is not None:
                if usage is None and text:  # cut short (error or disconnect): count what went out
                    with contextlib.suppress(Exception):
                        usage = await target.provider.count_usage(
                            request.op, payload, "".join(text)
                        )
                await request.settlement.settle(target, usage)  # step 11
