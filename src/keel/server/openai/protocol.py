"""Wire schemas of the OpenAI-compatible API: what clients may send and what they get back.

Requests are strict (a string is not a number) but let unknown fields through, because
clients put provider-specific options (top_k, min_p, …) there and upstreams honour them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import InitErrorDetails, ValidationError

from keel.prompts.spec import PROMPT_MODEL_PREFIX

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Role = Field(description="Who wrote the message.")
    content: str | list[dict[str, Any]] | None = Field(
        None, description="Text, or a list of content parts ({type: text, text: …})."
    )
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    include_usage: bool = Field(
        False, description="Send a last chunk with token usage before [DONE]."
    )


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


def _check_stop(value: str | list[str] | None) -> str | list[str] | None:
    if isinstance(value, list) and len(value) > 4:
        raise ValueError("at most 4 stop sequences are allowed")
    return value


# Each choice beyond the first is another upstream call (see gateway/choices.py): a cap
# keeps one request from holding a model server's every slot.
MAX_CHOICES = 8


def _check_n(value: int | None) -> int | None:
    if value is not None and not 1 <= value <= MAX_CHOICES:
        raise ValueError(
            f"n must be between 1 and {MAX_CHOICES} (got {value}); "
            "send several requests for more choices"
        )
    return value


class _SamplingFields(_Request):
    model: str = Field(min_length=1, description="Model id, as listed by GET /v1/models.")
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1, description="Most tokens to generate.")
    stop: str | list[str] | None = Field(None, description="Up to 4 stop sequences.")
    seed: int | None = None
    n: int | None = Field(
        None,
        description=f"Number of choices, 1 to {MAX_CHOICES}; more than 1 only without stream.",
    )
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    user: str | None = Field(None, max_length=256, description="End-user id, for tracing.")
    stream: bool = Field(False, description="Answer as server-sent events.")
    stream_options: StreamOptions | None = None

    _stop = field_validator("stop")(_check_stop)
    _n = field_validator("n")(_check_n)


class PromptRef(BaseModel):
    """Keel extension: render a stored prompt and put its messages before the client's."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=100, description="Prompt name in your project.")
    label: str | None = Field(
        None, min_length=1, max_length=64, description="Label to use; default production."
    )
    version: int | None = Field(
        None, ge=1, le=2**31 - 1, description="Version number (instead of a label)."
    )
    variables: dict[str, Any] = Field(
        default_factory=dict, description="Values for the template's {{ variables }}."
    )

    @model_validator(mode="after")
    def _label_or_version(self) -> PromptRef:
        if self.label is not None and self.version is not None:
            raise ValueError("send either prompt.label or prompt.version, not both")
        return self


class ChatCompletionRequest(_SamplingFields):
    # Optional here because a stored prompt may name the model; checked below.
    model: str | None = Field(  # type: ignore[assignment]
        None,
        min_length=1,
        description="Model id, as listed by GET /v1/models; or prompt:NAME[@LABEL|@VERSION] "
        "to use a stored prompt. Optional when 'prompt' is sent and its version names one.",
    )
    messages: list[ChatMessage] | None = Field(
        None,
        min_length=1,
        description="The conversation so far; optional when a prompt supplies messages.",
    )
    prompt: PromptRef | None = Field(
        None, description="Keel extension: a stored prompt whose messages come first."
    )
    prompt_variables: dict[str, Any] | None = Field(
        None, description="Keel extension: variables for a prompt named in model (prompt:NAME)."
    )
    max_completion_tokens: int | None = Field(
        None, ge=1, description="Newer name of max_tokens; wins when both are sent."
    )
    # Checked by the gateway's retrieval step (so every caller gets the same 400s).
    kb: dict[str, Any] | str | None = Field(
        None,
        description="Keel extension: knowledge bases to answer from: a base name, or "
        '{"name" (or "names": [...]), "top_k" (1-100, default 4), "mode" (hybrid | dense | '
        'lexical), "filters", "rerank" (lexical), "groundedness" (background | wait | '
        "block)}. The answer carries a citations list (streamed: a last chunk before [DONE]).",
    )
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None

    @model_validator(mode="after")
    def _model_and_messages(self) -> ChatCompletionRequest:
        if self.prompt is not None or (self.model or "").startswith(PROMPT_MODEL_PREFIX):
            return self
        missing = [name for name in ("model", "messages") if getattr(self, name) is None]
        if missing:
            # Raised as field errors so the 400 names the param, as a plain required field would.
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [InitErrorDetails(type="missing", loc=(name,), input=None) for name in missing],
            )
        return self


class CompletionRequest(_SamplingFields):
    prompt: str | list[str] = Field(description="Text to continue (a list of one is accepted).")

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("send exactly one prompt per request (a string or a list of one)")
        return value


class EmbeddingRequest(_Request):
    model: str = Field(min_length=1, description="Embedding model id.")
    input: str | list[str] = Field(description="A text or a list of texts to embed.")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="float: lists of numbers; base64: little-endian float32 bytes."
    )
    dimensions: int | None = Field(None, ge=1, description="Must equal the model's dimension.")
    user: str | None = Field(None, max_length=256)

    @field_validator("input", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        if isinstance(value, list) and any(not isinstance(item, str) for item in value):
            raise ValueError(
                "input must be a string or a list of strings; token-id arrays are not "
                "supported, send the text"
            )
        return value

    @field_validator("input")
    @classmethod
    def _non_empty(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts:
            raise ValueError("input must hold at least one text")
        if any(not text for text in texts):
            raise ValueError("input texts must not be empty strings")
        return value


# Responses (documented in OpenAPI; handlers build them as plain JSON for speed).


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatChoice(BaseModel):
    index: int
    message: dict[str, Any]
    finish_reason: str | None
    logprobs: Any = None


class Citation(BaseModel):
    """Keel extension: the passage an answer's [index] marker refers to."""

    index: int = Field(description="The number in the answer's [n] markers.")
    kb: str
    chunk_id: int
    document_id: str
    source: str
    title: str
    heading_path: list[str]
    start: int = Field(description="Offsets of the chunk in its document's text.")
    end: int
    score: float
    cited: bool = Field(description="Whether the answer's text names this passage.")


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    citations: list[Citation] | None = Field(
        None, description="Keel extension: when the request named kb, the passages retrieved."
    )


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str | None
    logprobs: Any = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: dict[str, int]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorBody
