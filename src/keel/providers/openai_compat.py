"""Adapter for any OpenAI-compatible server: llama.cpp, vLLM, Ollama, TGI, OpenAI itself.

Bodies pass through as OpenAI wire JSON; streams are parsed SSE events.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import orjson

from keel.errors import UpstreamError
from keel.providers.base import Operation, ProviderResponse, TokenCounter, Usage
from keel.providers.http import ResponseStream, UpstreamHTTP, parse_retry_after

__all__ = ["OpenAICompatProvider", "estimate_tokens", "parse_retry_after"]


def _usage_from(body: dict[str, Any]) -> Usage | None:
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int):
        return Usage(prompt, completion)
    return None


def _error_message(raw: bytes) -> str:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")[:500] or "(empty body)"
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and "message" in error:
            return str(error["message"])
        if isinstance(error, str):
            return error
        if "detail" in body:
            return str(body["detail"])[:500]
    return str(body)[:500]


def estimate_tokens(text: str) -> int:
    """Rough count (about four characters a token) for upstreams that report no usage."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def _prompt_text(op: Operation, payload: dict[str, Any]) -> str:
    if op == "completions":
        prompt = payload.get("prompt", "")
        return prompt if isinstance(prompt, str) else "".join(prompt)
    parts: list[str] = []
    for message in payload.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "\n".join(parts)


class _SSEStream(ResponseStream):
    """Parsed `data:` events of one upstream response; closing it drops the connection."""

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        async with aclosing(self._data()) as events:
            async for chunk in events:
                if isinstance(chunk, dict) and "error" in chunk:
                    raise UpstreamError(
                        f"upstream '{self._provider}' failed mid-stream: "
                        f"{_error_message(orjson.dumps(chunk))}"
                    )
                yield chunk


class OpenAICompatProvider:
    """Talks HTTP to one OpenAI-compatible base URL with a pooled keep-alive session."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        api_key: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 600.0,
        token_counter: TokenCounter | None = None,
        supports_n: bool = False,
    ):
        """`supports_n`: the server answers `n` > 1 in one call (OpenAI, vLLM do; llama.cpp
        does not). Off unless declared: Keel then asks for each choice separately."""
        self.name = name
        self.supports_n = supports_n
        self.base_url = base_url.rstrip("/")
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = UpstreamHTTP(
            name,
            base_url,
            headers,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            error_message=_error_message,
        )
        self._token_counter = token_counter

    async def send(self, op: Operation, payload: dict[str, Any]) -> ProviderResponse:
        body = await self._http.read_json(await self._http.post(op, payload))
        if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
            raise UpstreamError(f"upstream '{self.name}' answered without 'choices'")
        return ProviderResponse(body=body, usage=_usage_from(body))

    async def open_stream(self, op: Operation, payload: dict[str, Any]) -> _SSEStream:
        return _SSEStream(self.name, await self._http.post(op, payload))

    async def count_usage(self, op: Operation, payload: dict[str, Any], output_text: str) -> Usage:
        if self._token_counter is not None:
            return await self._token_counter.count(op, payload, output_text)
        return Usage(estimate_tokens(_prompt_text(op, payload)), estimate_tokens(output_text))

    async def close(self) -> None:
        await self._http.close()
