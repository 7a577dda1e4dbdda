"""What a workflow or an agent declares: steps of nine kinds, JSON Schemas, limits.

`keel apply`, the API and the engine share these models; references between steps are
checked separately (validate.py), because they need the whole workflow at once.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
STEP_ID_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"
WORKFLOW_PREFIX = "workflow:"
AGENT_PREFIX = "agent:"
KINDS = ("llm", "retrieve", "http", "transform", "branch", "map", "workflow", "guard", "agent")
MAX_STEPS = 200
Schema = dict[str, Any]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Message(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=32_768)


class LlmStep(_Strict):
    """A chat call through the gateway: a stored prompt by name, or messages."""

    model: str | None = Field(None, max_length=200, description="Route or model alias.")
    prompt: str | None = Field(None, max_length=200, description="name or name@label")
    variables: dict[str, Any] = Field(default_factory=dict)
    messages: list[Message] | None = None
    schema_: Schema | None = Field(None, alias="schema", description="Structured output.")
    max_tokens: int | None = Field(None, ge=1, le=32_768)
    temperature: float | None = Field(None, ge=0, le=2)

    @model_validator(mode="after")
    def _one_source(self) -> LlmStep:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give either prompt (a stored prompt's name) or messages")
        if self.messages is not None and self.model is None:
            raise ValueError("messages need a model (a route or model alias)")
        return self


class RetrieveStep(_Strict):
    kb: str = Field(max_length=100)
    query: str = Field(max_length=4096)
    top_k: int = Field(4, ge=1, le=50)


class HttpStep(_Strict):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: str = Field(max_length=2048)
    headers: dict[str, str | dict[str, str]] = Field(default_factory=dict)
    body: Any = None
    input_schema: Schema | None = None
    output_schema: Schema | None = None
    timeout: float = Field(10.0, gt=0, le=300)
    retries: int = Field(0, ge=0, le=10)
    idempotency_header: str = Field("Idempotency-Key", max_length=100)


class TransformStep(_Strict):
    value: Any
    schema_: Schema | None = Field(None, alias="schema")


class BranchCase(_Strict):
    if_: str = Field(alias="if", max_length=2048)
    then: list[str] = Field(min_length=1)


class BranchStep(_Strict):
    cases: list[BranchCase] = Field(min_length=1)
    else_: list[str] = Field(default_factory=list, alias="else")


class MapStep(_Strict):
    over: str = Field(max_length=2048, description="An expression giving a list.")
    steps: list[StepSpec] = Field(min_length=1)
    output: Any = None  # per item; default: the last step's output
    concurrency: int = Field(4, ge=1, le=64)
    max_items: int = Field(10_000, ge=1, le=100_000)


class WorkflowCall(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    input: Any = None


class GuardStep(_Strict):
    text: str = Field(max_length=4096)
    policy: str | None = Field(None, max_length=100)
    source: Literal["user", "retrieved", "tool", "http"] = "retrieved"
    on_block: Literal["fail", "continue"] = "fail"


class AgentCall(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    input: str = Field(max_length=4096)


class StepSpec(_Strict):
    id: str = Field(pattern=STEP_ID_PATTERN)
    when: str | None = Field(None, max_length=2048, description="Run only when true.")
    llm: LlmStep | None = None
    retrieve: RetrieveStep | None = None
    http: HttpStep | None = None
    transform: TransformStep | None = None
    branch: BranchStep | None = None
    map: MapStep | None = None
    workflow: WorkflowCall | None = None
    guard: GuardStep | None = None
    agent: AgentCall | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> StepSpec:
        given = [kind for kind in KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError(
                f"a step has exactly one kind ({', '.join(KINDS)}); this one has "
                f"{', '.join(given) or 'none'}"
            )
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in KINDS if getattr(self, kind) is not None)

    @property
    def body(self) -> Any:
        return getattr(self, self.kind)


class WorkflowSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = Field("", max_length=2000)
    input: Schema = Field(default_factory=lambda: {"type": "object"})
    output: Any = None  # a value template; default: the last step's output
    output_schema: Schema | None = None
    steps: list[StepSpec] = Field(min_length=1, max_length=MAX_STEPS)

    def content_hash(self) -> str:
        return content_hash(self)


class Budget(_Strict):
    """What an agent run may use at most, over every turn: tokens (prompt and completion)
    and cost, priced as the gateway prices calls (the model versions' prices per million
    tokens). A turn that could pass either is not started."""

    tokens: int | None = Field(None, ge=1)
    cost_usd: float | None = Field(None, gt=0, description="In the prices' currency units.")


class HttpTool(_Strict):
    """A tool the agent calls over HTTP: its arguments are the request's JSON body."""

    name: str = Field(pattern=STEP_ID_PATTERN)
    description: str = Field("", max_length=1000)
    parameters: Schema = Field(default_factory=lambda: {"type": "object"})
    http: HttpStep


class KbTool(_Strict):
    name: str = Field(pattern=STEP_ID_PATTERN)
    description: str = Field("", max_length=1000)
    kb: str = Field(max_length=100)
    top_k: int = Field(4, ge=1, le=20)


class WorkflowTool(_Strict):
    name: str = Field(pattern=STEP_ID_PATTERN)
    description: str = Field("", max_length=1000)
    workflow: str = Field(pattern=NAME_PATTERN)
    parameters: Schema = Field(default_factory=lambda: {"type": "object"})


class AgentSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = Field("", max_length=2000)
    model: str = Field(max_length=200)
    instructions: str = Field("You are a helpful assistant.", max_length=16_384)
    tools: list[HttpTool | KbTool | WorkflowTool] = Field(default_factory=list, max_length=64)
    max_turns: int = Field(6, ge=1, le=100)
    budget: Budget = Field(default_factory=Budget)
    # grammar: the model answers JSON decoded under a grammar built from the tools' schemas
    # (llama.cpp and any server honouring response_format's schema); native: OpenAI tools.
    tool_calling: Literal["grammar", "native"] = "grammar"
    max_tokens: int = Field(256, ge=1, le=32_768)
    temperature: float = Field(0.0, ge=0, le=2)

    def content_hash(self) -> str:
        return content_hash(self)


def content_hash(spec: BaseModel) -> str:
    data = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


MapStep.model_rebuild()
