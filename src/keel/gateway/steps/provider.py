"""Step 8: call the provider through the route's targets (retries, fallbacks, breakers).

The router tries targets in order; each attempt is a span. A client that leaves cancels
the call (ClientDisconnected). Streams are opened here, before the first byte reaches the
client, so failures still get a proper status; the relay (relay.py) takes them from there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from keel.calls import Call, CallState
from keel.cost import cost
from keel.gateway.choices import send_choices
from keel.gateway.disconnect import ClientWatch
from keel.providers.base import ProviderResponse, ProviderStream
from keel.routing.router import Outcome, Router
from keel.routing.table import Route, Target

T = TypeVar("T")


def upstream_payload(target: Target, body: dict[str, Any], stream: bool) -> dict[str, Any]:
    """The body sent upstream: the client's fields over the target's defaults, renamed."""
    payload = {**target.defaults, **body}
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


def _cancelling(watch: ClientWatch | None) -> AbstractContextManager[None]:
    return watch.cancelling() if watch is not None else contextlib.nullcontext()


async def _routed(
    router: Router,
    call: Call,
    state: CallState,
    route: Route,
    watch: ClientWatch | None,
    send: Callable[[Target], Awaitable[T]],
    keep_open: bool,
) -> Outcome[T]:
    """Run the router's attempt loop, each attempt a span (a stream's lasts to its end)."""
    span = state.begin("route")

    async def attempt(target: Target) -> T:
        step = state.begin("attempt", "route", target)
        try:
            value = await send(target)
        except BaseException as exc:
            state.end(step, exc)
            raise
        if not keep_open:
            state.end(step)
        return value

    with _cancelling(watch):
        outcome = await router.run(route, call.principal, state.body.get("user"), attempt)
    state.end(span)
    state.route, state.target, state.attempts = outcome.route, outcome.target, outcome.attempts
    return outcome


class CallProvider:
    """A whole answer, with the client's model name and usage (counted when not reported)."""

    def __init__(self, router: Router):
        self.router = router

    async def run(
        self, call: Call, state: CallState, route: Route, watch: ClientWatch | None
    ) -> dict[str, Any]:
        op = call.op
        assert op != "embeddings"

        async def send(target: Target) -> tuple[dict[str, Any], ProviderResponse]:
            payload = upstream_payload(target, state.body, stream=False)
            return payload, await send_choices(target.provider, op, payload)

        outcome = await _routed(self.router, call, state, route, watch, send, keep_open=False)
        payload, result = outcome.value
        body = result.body
        model = body.get("model")
        state.response_model = model if isinstance(model, str) else None
        body["model"] = state.model
        usage = result.usage
        if usage is None:
            text = "".join(
                (c.get("message") or {}).get("content") or ""
                if op == "chat/completions"
                else c.get("text") or ""
                for c in body.get("choices", [])
            )
            usage = await outcome.target.provider.count_usage(op, payload, text)
        state.usage, state.cost = usage, cost(outcome.target, usage)
        body["usage"] = usage.as_dict()
        return body


class OpenStream:
    """A stream, opened: the payload sent and the upstream's events, not yet read."""

    def __init__(self, router: Router):
        self.router = router

    async def run(
        self, call: Call, state: CallState, route: Route, watch: ClientWatch | None
    ) -> tuple[dict[str, Any], ProviderStream]:
        op = call.op
        assert op != "embeddings"

        async def send(target: Target) -> tuple[dict[str, Any], ProviderStream]:
            payload = upstream_payload(target, state.body, stream=True)
            return payload, await target.provider.open_stream(op, payload)

        outcome = await _routed(self.router, call, state, route, watch, send, keep_open=True)
        return outcome.value
