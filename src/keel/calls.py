"""What a caller hands the gateway (`Call`) and what one call learns on its way (`CallState`).

Below every step: limits, prompts and the cache read these types without importing the
gateway, and the gateway's steps write the state that headers and the trace come from.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from keel.auth.keys import Principal
from keel.providers.base import Usage
from keel.routing.table import Target
from keel.tracing.model import RequestTrace, Step, error_type

CallOp = Literal["chat/completions", "completions", "embeddings"]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]

_ACTION_RANK = {"allow": 0, "flag": 1, "redact": 2, "block": 3}


@dataclass(frozen=True, slots=True)
class Call:
    """One validated request, as its caller (the /v1 router, the console, a batch) sends it.

    `body` is the wire JSON the client sent, model included; steps never edit it (the
    request as they rewrite it lives in `CallState.body`). `receive` is the ASGI channel
    on which a client that leaves is noticed; None for callers with no client to lose.
    """

    op: CallOp
    body: dict[str, Any]
    principal: Principal
    trace_id: str = ""
    client_headers: Mapping[str, str] = field(default_factory=dict)
    receive: Receive | None = None
    started_ns: int = 0  # when the request arrived (0: when the gateway starts it)
    auth_ns: tuple[int, int] | None = None  # authentication's start and end, for its span
    session_id: str | None = None  # X-Keel-Session-Id
    metadata: Mapping[str, str] = field(default_factory=dict)  # X-Keel-Metadata-*

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))


class Settlement(Protocol):
    """Handed over by admission: count what the call used and free its slots, once.

    `usage` is None when there is no answer to count.
    """

    async def settle(self, target: Target | None, usage: Usage | None) -> None: ...


@dataclass(frozen=True, slots=True)
class PromptUsed:
    name: str
    version: int


@dataclass(slots=True)
class CallState:
    """Everything one call has done so far; headers and the trace are rendered from it.

    Each field is written by one step (named in its comment) and read by later ones.
    """

    body: dict[str, Any]  # the request as the steps rewrote it (prompt, admit, guard)
    started_ns: int  # when the call started (epoch ns)
    trace: RequestTrace | None = None  # spans (timings) of the steps, when tracing is on
    prompt: PromptUsed | None = None  # resolve prompt
    settlement: Settlement | None = None  # admit
    limit_headers: Mapping[str, str] | None = None  # admit: x-ratelimit-*, budget warning
    retrieval: Any = None  # retrieve: the passages a knowledge base gave (knowledge.rag)
    guard: Any = None  # guard input: the request's scan state, for guard output
    guard_policy: str | None = None  # guard input
    guard_action: str | None = None  # guard input and output: the strongest action
    cache: str | None = None  # cache lookup: hit-exact | hit-semantic | miss
    saved_cost: float | None = None  # cache lookup: what a hit saved
    saved_ms: float | None = None
    route: str | None = None  # route
    target: Target | None = None  # call provider: the target that answered
    attempts: int = 0
    usage: Usage | None = None  # call provider
    cost: float | None = None
    response_model: str | None = None  # the upstream's own model name
    output: Any = None  # what the trace keeps of the answer: choices, or streamed text
    embedding_model: str | None = None
    first_token_ns: int | None = None
    last_chunk: dict[str, Any] | None = None  # a stream's last chunk with choices
    error: BaseException | None = None  # how the call ended, None when it succeeded
    gone: bool = False  # the client left before the whole answer reached it

    @property
    def model(self) -> str:
        return str(self.body["model"])

    @property
    def wants_usage(self) -> bool:
        options = self.body.get("stream_options") or {}
        return bool(options.get("include_usage"))

    def begin(
        self, name: str, parent: str = "request", target: Target | None = None
    ) -> Step | None:
        """A span for a step that starts now (None when tracing is off)."""
        return self.trace.begin(name, parent, target) if self.trace is not None else None

    @staticmethod
    def end(step: Step | None, error: BaseException | None = None) -> None:
        if step is not None:
            step.end_ns = time.time_ns()
            if error is not None:
                step.error = error_type(error)

    def guarded(
        self, name: str, start_ns: int, policy: str, verdicts: list[Any], action: str
    ) -> None:
        """A guard step is over: its span keeps the verdicts; the state the strongest action."""
        self.guard_policy = policy
        if self.guard_action is None or _ACTION_RANK[action] > _ACTION_RANK[self.guard_action]:
            self.guard_action = action
        if self.trace is not None:
            step = self.trace.begin(name)
            step.start_ns = start_ns
            step.end_ns = time.time_ns()
            step.verdicts = verdicts
