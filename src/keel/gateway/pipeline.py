"""The request path: `Gateway.handle(call)` runs every step, top to bottom, for any caller.

The caller (the /v1 router, the console playground, a batch, an evaluation) authenticates
and hands over a `Call`; `handle` resolves the prompt, admits, guards, looks in the cache,
routes, calls the provider, guards the output, stores in the cache, and — in its one
`finally`, whichever way the call ends — settles limits and records the trace, once.
The steps are small classes in `gateway/steps/`; what they learn travels in `CallState`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

from keel.cache.config import CacheScope
from keel.cache.service import CacheHit, ResponseCache
from keel.cache.sse import replay_sse
from keel.calls import Call, CallState
from keel.errors import InvalidRequest
from keel.gateway.answer import Answer, EventStream
from keel.gateway.choices import choice_count
from keel.gateway.disconnect import ClientWatch
from keel.gateway.steps.admit import Admit
from keel.gateway.steps.cache import CacheLookup, CacheStore
from keel.gateway.steps.embed import Embed
from keel.gateway.steps.guard import GuardInput, GuardOutput
from keel.gateway.steps.prompt import ResolvePrompt
from keel.gateway.steps.provider import CallProvider, OpenStream
from keel.gateway.steps.record import Record, render_headers
from keel.gateway.steps.relay import DONE, Relay, sse
from keel.gateway.steps.retrieve import (
    Ground,
    Retrieve,
    answer_text,
    citations_event,
    cite,
    seal_context,
)
from keel.gateway.steps.route import RouteStep
from keel.guard.service import GuardService
from keel.knowledge.service import KnowledgeBases
from keel.limits.admission import Admission
from keel.prompts.resolver import PromptResolver
from keel.registry.catalog import ModelCatalog
from keel.routing.router import Router
from keel.routing.table import Route
from keel.tracing.service import Tracing

_N_STREAMED = (
    "n above 1 is answered whole only; send stream: false with n, or one streamed "
    "request per choice"
)


@dataclass(frozen=True, slots=True)
class _StreamHead:
    """What `_steps` yields before a stream's events: its headers and client watch."""

    headers: dict[str, str]
    client: ClientWatch | None


class Gateway:
    def __init__(
        self,
        catalog: ModelCatalog,
        router: Router,
        *,
        tracing: Tracing | None = None,
        prompts: PromptResolver | None = None,
        admission: Admission | None = None,
        guard: GuardService | None = None,
        cache: ResponseCache | None = None,
        cache_routes: Mapping[str, Mapping[str, Any]] | None = None,
        embedding_max_inputs: int = 2048,
        knowledge: KnowledgeBases | None = None,
    ):
        self.tracing = tracing
        self.prompt = ResolvePrompt(prompts) if prompts is not None else None
        self.admit = Admit(admission) if admission is not None else None
        self.retrieve = Retrieve(knowledge)
        self.ground = (
            Ground(knowledge, tracing.add_score)
            if knowledge is not None and tracing is not None
            else None
        )
        self.guard_input = GuardInput(guard) if guard is not None else None
        self.cache_lookup = CacheLookup(cache, cache_routes) if cache is not None else None
        self.route = RouteStep(catalog, router)
        self.call_provider = CallProvider(router)
        self.open_stream = OpenStream(router)
        self.guard_output = GuardOutput()
        self.cache = CacheStore(cache) if cache is not None else None
        self.embed = Embed(catalog, router, admission, embedding_max_inputs)

    async def handle(self, call: Call) -> Answer | EventStream:
        """Answer `call`: a whole answer, or a stream whose end (or closing) ends the call.

        Raises the call's error (KeelError: a 4xx/5xx for the client; ClientDisconnected:
        the client left), recorded and settled already.
        """
        steps = self._steps(call)
        head = await anext(steps)
        if isinstance(head, Answer):
            await anext(steps, None)  # runs the steps' `finally`: record and settle
            return head
        assert isinstance(head, _StreamHead)
        return EventStream(cast(AsyncIterator[bytes], steps), head.headers, head.client)

    async def _steps(self, call: Call) -> AsyncGenerator[Answer | _StreamHead | bytes, None]:
        """Every step in order, yielding the answer (or a stream's head, then its events);
        the `finally` is the one place a call ends: it settles and records, on every exit."""
        state = self._start(call)
        watch = ClientWatch(call.receive) if call.receive is not None else None
        events: AsyncGenerator[bytes, None] | None = None
        try:
            if call.op == "embeddings":
                yield Answer(await self.embed.run(call, state), render_headers(state))
                return
            if call.stream and choice_count(call.body) > 1:
                raise InvalidRequest(_N_STREAMED, param="n")
            if self.prompt is not None:
                await self.prompt.run(call, state)
            if self.admit is not None:
                await self.admit.run(call, state)
            await self.retrieve.run(call, state)
            if self.guard_input is not None:
                await self.guard_input.run(call, state)
            seal_context(state)  # retrieved sources, scanned as a document, join the system message
            route = self.route.run(call, state)
            scope, hit = None, None
            if self.cache_lookup is not None:
                scope, hit = await self.cache_lookup.run(call, state, route)
            if hit is not None:
                body = await self._cached(call, state, route.name, hit)
                events = _replay(state, body) if call.stream else None
            elif not call.stream:
                body = await self._whole(call, state, route, scope, watch)
            else:
                payload, upstream = await self.open_stream.run(call, state, route, watch)
                assert state.target is not None
                relay = Relay(call, state, state.target, payload, upstream, scope, self.cache)
                events = relay.run()
            if events is None:
                state.gone = watch is not None and watch.gone
                cite(body, state)
                headers = render_headers(state)
                if self.ground is not None:  # only when the request asked to wait for it
                    await self.ground.check(call, state, body, headers)
                yield Answer(body, headers)
                return
            yield _StreamHead(render_headers(state), watch)
            async for event in events:
                yield event
        except BaseException as exc:
            state.error = exc
            raise
        finally:
            if events is not None:
                await events.aclose()  # a stream cut short closes its upstream, counts its text
            if watch is not None:
                watch.close()
            if state.settlement is not None:
                await state.settlement.settle(state.target, state.usage)
            if state.trace is not None:
                Record.run(state.trace, state)
                if self.ground is not None and state.retrieval is not None:
                    self.ground.submit(call, state)  # scored in the background

    def _start(self, call: Call) -> CallState:
        started_ns = call.started_ns or time.time_ns()
        trace = self.tracing.start(call, started_ns) if self.tracing is not None else None
        return CallState(call.body, started_ns, trace)

    async def _cached(
        self, call: Call, state: CallState, route: str, hit: CacheHit
    ) -> dict[str, Any]:
        """A cache hit, through the output guard (it costs no tokens: nothing to settle)."""
        body = hit.response
        state.route = route
        state.output = await self.guard_output.run(call, state, body.get("choices"))
        model = body.get("model")
        state.response_model = model if isinstance(model, str) else None
        body["model"] = state.model
        return body

    async def _whole(self, call: Call, state: CallState, route: Route, scope: CacheScope | None,
                     watch: ClientWatch | None) -> dict[str, Any]:  # fmt: skip
        """Steps 8 to 10 for a whole answer: the provider, the output guard, the cache."""
        body = await self.call_provider.run(call, state, route, watch)
        state.output = await self.guard_output.run(call, state, body.get("choices"))
        if scope is not None and self.cache is not None:
            stored = {**body, "model": state.response_model, "choices": state.output}
            latency_ms = (time.time_ns() - state.started_ns) / 1e6
            self.cache.run(scope, state, stored, state.cost, latency_ms)
        return body


async def _replay(state: CallState, body: dict[str, Any]) -> AsyncGenerator[bytes, None]:
    """A cached answer as the stream the client asked for (already guarded), in one write."""
    events = [event async for event in replay_sse(body, state.model, state.wants_usage)]
    if state.retrieval is not None and events and events[-1] == DONE:
        chunk_id, created = str(body.get("id", "")), int(body.get("created") or 0)
        last = citations_event(state, chunk_id, created, answer_text(state))
        events.insert(-1, sse(last))
    if state.first_token_ns is None:
        state.first_token_ns = time.time_ns()
    yield b"".join(events)
