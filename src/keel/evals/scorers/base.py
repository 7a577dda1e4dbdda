"""The scorer noun: one method, `measure`, returns a number; the verdict is derived from it.

Each scorer class declares its range and direction and a default threshold; a spec may
move the threshold, never the rule: `passed = value >= threshold` for higher-is-better
scorers and `value <= threshold` for lower-is-better ones, so a pass flag can never
contradict its score.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from keel.auth.keys import Principal
from keel.embeddings.base import Embedder


class ScorerSpec(BaseModel):
    """How an experiment asks for a scorer: its type, a name for its metric, a threshold,
    and the scorer's own options."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="exact, contains, regex, json, json_equal, json_schema, "
                      "numeric, embedding, rouge, bleu, latency, cost, groundedness, pii, "
                      "secrets, toxicity, judge")  # fmt: skip
    name: str | None = Field(None, pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$",
                             description="The metric's name (default: the type)")  # fmt: skip
    threshold: float | None = Field(None, description="Pass mark (default: the scorer's)")

    @property
    def metric(self) -> str:
        return self.name or self.type

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


@dataclass(frozen=True, slots=True)
class Observation:
    """What one scored call produced, and what its item expected."""

    output: str
    expected: Any
    input: dict[str, Any]
    context: list[str] | None
    latency_ms: float | None = None
    cost: float | None = None
    trace_id: str | None = None
    request: dict[str, Any] | None = None  # the chat request that produced the output


@dataclass(frozen=True, slots=True)
class Measured:
    value: float | None  # None: the scorer could not score this output (`detail` says why)
    detail: str = ""


# A chat call through the gateway, for scorers that ask a model (the judge): body → content.
ChatCall = Callable[[dict[str, Any], dict[str, str]], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class Deps:
    """What scorers may use: the caller's identity, a gateway call, the embedder."""

    principal: Principal | None = None
    chat: ChatCall | None = None
    embedder: Callable[[], Embedder | None] = lambda: None
    routes: frozenset[str] = frozenset()  # models the principal may call (judges are checked)


class Scorer:
    """Subclasses set the class attributes, an `Options` model and `measure`."""

    kind: ClassVar[str]
    summary: ClassVar[str]
    low: ClassVar[float | None] = 0.0  # None: unbounded
    high: ClassVar[float | None] = 1.0
    higher_is_better: ClassVar[bool] = True
    default_threshold: ClassVar[float] = 1.0

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def __init__(self, spec: ScorerSpec, options: BaseModel, deps: Deps):
        self.spec = spec
        self.options = options
        self.deps = deps
        self.metric = spec.metric
        self.threshold = spec.threshold if spec.threshold is not None else self.default_threshold

    async def measure(self, observation: Observation) -> Measured:
        raise NotImplementedError

    def passed(self, value: float | None) -> bool:
        if value is None:
            return False
        return value >= self.threshold if self.higher_is_better else value <= self.threshold

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.metric,
            "type": self.kind,
            "range": [self.low, self.high],
            "direction": "higher" if self.higher_is_better else "lower",
            "threshold": self.threshold,
        }
