"""What the request path records: a `RequestTrace` of timestamps and references.

Kept deliberately cheap: no attribute dicts, no JSON, no hashing happen here; the
recorder's worker thread turns a finished trace into rows (see `convert.py`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from keel.auth.keys import Principal
from keel.errors import KeelError
from keel.providers.base import Usage
from keel.routing.router import Outcome
from keel.routing.table import Target

# gen_ai.operation.name per gateway operation (OpenTelemetry GenAI semantic conventions).
OPERATIONS = {
    "chat/completions": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
}
KEEL_HEADERS = b"x-keel-"
SESSION_HEADER = b"x-keel-session-id"
METADATA_PREFIX = b"x-keel-metadata-"
MAX_METADATA = 32
MAX_HEADER_VALUE = 256


class ClientDisconnected(Exception):
    """The client went away before the answer was complete."""


def error_type(error: BaseException) -> str:
    """A low-cardinality name for an error (OpenTelemetry's `error.type`)."""
    if isinstance(error, KeelError):
        return error.type
    if isinstance(error, GeneratorExit | ClientDisconnected):
        return "client_disconnected"
    return type(error).__name__


def http_status(error: BaseException | None) -> int:
    if error is None:
        return 200
    if isinstance(error, KeelError):
        return error.status
    if isinstance(error, GeneratorExit | ClientDisconnected) or (
        type(error).__name__ == "CancelledError"
    ):
        return 499  # the client went away (nginx's convention)
    return 500


@dataclass(slots=True)
class Step:
    """One timed step of a request; becomes one span. `end_ns == 0` while it runs."""

    name: str
    start_ns: int
    end_ns: int = 0
    parent: str = "request"  # the name of the parent step
    error: str | None = None
    target: Target | None = None  # for provider attempts
    # Guard steps: the scanners' verdicts (guard.base.Verdict), turned into attributes later.
    verdicts: list[Any] | None = None
    attributes: dict[str, Any] | None = None  # set by the step itself (retrieval's chunk ids)


def header_context(scope: Mapping[str, Any]) -> tuple[str | None, dict[str, str]]:
    """The session id and custom metadata a client sent as X-Keel-* headers."""
    session: str | None = None
    metadata: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        # Every header of every request comes by here: most names sort before "x-keel-",
        # and one comparison is cheaper than startswith() for those.
        if name < KEEL_HEADERS or not name.startswith(KEEL_HEADERS):
            continue
        if name == SESSION_HEADER:
            session = value[:MAX_HEADER_VALUE].decode("latin-1")
        elif name.startswith(METADATA_PREFIX) and len(metadata) < MAX_METADATA:
            key = name[len(METADATA_PREFIX) :].decode("latin-1")[:64]
            if key:
                metadata[key] = value[:MAX_HEADER_VALUE].decode("latin-1")
    return session, metadata


class RequestTrace:
    """The record of one gateway request, filled in by the steps as they run.

    `finish()` hands it to the sink (the recorder) exactly once; nothing here waits.
    """

    __slots__ = (
        "attempts",
        "body",
        "cache",
        "cost",
        "embedding_model",
        "end_ns",
        "error",
        "finished",
        "first_token_ns",
        "guard_action",
        "guard_policy",
        "last_chunk",
        "metadata",
        "op",
        "output",
        "principal",
        "prompt",
        "response_model",
        "route",
        "saved_cost",
        "saved_ms",
        "session_id",
        "sink",
        "start_ns",
        "steps",
        "target",
        "trace_id",
        "usage",
    )

    def __init__(
        self,
        sink: Callable[[RequestTrace], None],
        trace_id: str,
        op: str,
        principal: Principal,
        body: dict[str, Any],
        *,
        start_ns: int,
        auth: tuple[int, int] | None = None,
        session_id: str | None = None,
        metadata: dict[str, str] | None = None,
    ):
        self.sink = sink
        self.trace_id = trace_id
        self.op = op
        self.principal = principal
        self.body = body
        self.start_ns = start_ns
        self.session_id = session_id
        self.metadata = metadata if metadata is not None else {}
        self.steps: list[Step] = []
        if auth is not None:
            self.steps.append(Step("auth", auth[0], auth[1]))
        self.end_ns = 0
        self.first_token_ns: int | None = None
        self.route: str | None = None
        self.target: Target | None = None
        self.attempts = 0
        self.prompt: tuple[str, int] | None = None
        self.usage: Usage | None = None
        self.cost: float | None = None
        self.response_model: str | None = None
        self.output: Any = None  # the answer: text, or the response body's choices
        self.last_chunk: dict[str, Any] | None = None  # a stream's last chunk with choices
        self.embedding_model: str | None = None
        self.error: BaseException | None = None
        self.finished = False
        self.guard_policy: str | None = None
        self.guard_action: str | None = None  # the strongest action over all guard steps
        self.cache: str | None = None  # hit-exact | hit-semantic | miss
        self.saved_cost: float | None = None
        self.saved_ms: float | None = None

    def begin(self, name: str, parent: str = "request", target: Target | None = None) -> Step:
        step = Step(name, time.time_ns(), 0, parent, None, target)  # positional: cheaper
        self.steps.append(step)
        return step

    @staticmethod
    def end(step: Step, error: BaseException | None = None) -> None:
        step.end_ns = time.time_ns()
        if error is not None:
            step.error = error_type(error)

    def routed(self, step: Step, outcome: Outcome[Any]) -> None:
        """Step 6 is over: the router found a target that answered."""
        self.end(step)
        self.route = outcome.route
        self.target = outcome.target
        self.attempts = outcome.attempts

    def answered(self, usage: Usage, response_model: Any, output: Any) -> None:
        """A whole answer: its usage, the upstream's model name and its choices."""
        self.usage = usage
        self.response_model = response_model if isinstance(response_model, str) else None
        self.output = output

    def finish(self, error: BaseException | None = None) -> None:
        """End the request (and any step still open) and hand the trace to the recorder."""
        if self.finished:
            return
        self.finished = True
        self.end_ns = time.time_ns()
        self.error = error
        for step in self.steps:
            if step.end_ns == 0:
                step.end_ns = self.end_ns
                if error is not None and step.error is None:
                    step.error = error_type(error)
        self.sink(self)
