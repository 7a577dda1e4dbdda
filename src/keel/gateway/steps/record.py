"""Step 11: the call's trace and response headers, each rendered from its state in one place."""

from __future__ import annotations

from keel.calls import CallState
from keel.tracing.model import ClientDisconnected, RequestTrace


def render_headers(state: CallState) -> dict[str, str]:
    """The response's X-Keel-* headers (and admission's x-ratelimit-*), from the state."""
    headers = dict(state.limit_headers) if state.limit_headers else {}
    if state.prompt is not None:
        headers["X-Keel-Prompt"] = state.prompt.name
        headers["X-Keel-Prompt-Version"] = str(state.prompt.version)
    if state.guard_policy is not None:
        headers["X-Keel-Guard-Policy"] = state.guard_policy
    if state.cache is not None:
        headers["X-Keel-Cache"] = state.cache
    if state.retrieval is not None:
        headers["X-Keel-Knowledge"] = ",".join(state.retrieval.request.bases)
        headers["X-Keel-Citations"] = str(len(state.retrieval.passages))
    if state.route is not None:
        headers["X-Keel-Route"] = state.route
    if state.target is not None:
        headers["X-Keel-Target"] = state.target.ref
        headers["X-Keel-Attempts"] = str(state.attempts)
    return headers


class Record:
    """Hand the call's trace to the recorder (its queue; nothing here waits)."""

    @staticmethod
    def run(trace: RequestTrace, state: CallState) -> None:
        trace.body = state.body
        trace.prompt = (state.prompt.name, state.prompt.version) if state.prompt else None
        trace.route, trace.target, trace.attempts = state.route, state.target, state.attempts
        trace.usage, trace.cost = state.usage, state.cost
        trace.response_model, trace.embedding_model = state.response_model, state.embedding_model
        trace.output, trace.last_chunk = state.output, state.last_chunk
        trace.first_token_ns = state.first_token_ns
        trace.guard_policy, trace.guard_action = state.guard_policy, state.guard_action
        trace.cache, trace.saved_cost, trace.saved_ms = (
            state.cache,
            state.saved_cost,
            state.saved_ms,
        )
        if state.error is None and state.gone:
            state.error = ClientDisconnected()  # a whole answer that reached nobody
        trace.finish(state.error)
