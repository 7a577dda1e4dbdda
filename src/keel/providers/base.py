"""The Provider protocol: one upstream that answers chat and text completions.

Payloads are OpenAI wire JSON (already validated by the server); what comes back is
typed: a whole `ProviderResponse`, or a `ProviderStream` of parsed SSE chunks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Operation = Literal["chat/completions", "completions"]


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


@dataclass(frozen=True, slots=True)
class ProviderResponse:
    body: dict[str, Any]
    usage: Usage | None


class ProviderStream(Protocol):
    """An open upstream stream: iterate its chunks; always closed by the consumer."""

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]: ...

    def buffered(self) -> bool:
        """True when the next chunk has arrived already: the relay sends chunks that came
        together in one write, and never holds one back waiting for the next."""
        ...

    async def aclose(self) -> None: ...


class TokenCounter(Protocol):
    """Counts tokens the way the upstream's model does, for streams that report no usage."""

    async def count(self, op: Operation, payload: dict[str, Any], output_text: str) -> Usage: ...


class Provider(Protocol):
    """An upstream. One that answers `n` > 1 choices itself in one call declares it with a
    true `supports_n` attribute (see `answers_n`); for the others Keel makes n calls."""

    name: str

    async def send(self, op: Operation, payload: dict[str, Any]) -> ProviderResponse: ...

    async def open_stream(self, op: Operation, payload: dict[str, Any]) -> ProviderStream: ...

    async def count_usage(
        self, op: Operation, payload: dict[str, Any], output_text: str
    ) -> Usage: ...

    async def close(self) -> None: ...


def answers_n(provider: object) -> bool:
    """Whether `provider` declared that it answers `n` > 1 in one call (`supports_n`).

    An optional attribute rather than a Protocol member: no upstream has to say it, and
    unless one does, it is treated as unable (llama.cpp's server is).
    """
    return getattr(provider, "supports_n", False) is True
