"""Adapter for any OpenAI-compatible server: llama.cpp, vLLM, Ollama, TGI, OpenAI itself.

aiohttp rather than httpx on this path: its client adds several times less overhead per
request, and the gateway's added latency is a feature (see docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson

from keel.errors import (
    InvalidRequest,
    KeelError,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)
from keel.providers.base import Operation, ProviderResponse, TokenCounter, Usage


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


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date); None if absent."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None  # unreadable: behave as if the upstream had said nothing
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)  # HTTP dates are GMT even when they fail to say so
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


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


class _SSEStream:
    """Parsed `data:` events of one upstream response; closing it drops the connection."""

    def __init__(self, provider: str, response: aiohttp.ClientResponse):
        self._provider = provider
        self._response = response

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        try:
            async for raw_line in self._response.content:
                line = raw_line.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    return
                try:
                    chunk = orjson.loads(data)
                except orjson.JSONDecodeError as exc:
                    raise UpstreamError(
                        f"upstream '{self._provider}' sent a stream event that is not JSON"
                    ) from exc
                if isinstance(chunk, dict) and "error" in chunk:
                    raise UpstreamError(
                        f"upstream '{self._provider}' failed mid-stream: {_error_message(data)}"
                    )
                yield chunk
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(f"upstream '{self._provider}' stopped sending") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(
                f"upstream '{self._provider}' broke off the stream: {exc.__class__.__name__}"
            ) from exc
        finally:
            self._response.release()

    async def aclose(self) -> None:
        # close(), not release(): an unfinished stream must tell the upstream to stop.
        if not self._response.closed:
            self._response.close()


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
    ):
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._token_counter = token_counter
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, json_serialize=lambda o: o
            )
        return self._session

    async def _post(self, op: Operation, payload: dict[str, Any]) -> aiohttp.ClientResponse:
        url = f"{self.base_url}/{op}"
        try:
            response = await self._client().post(
                url, data=orjson.dumps(payload), headers=self._headers
            )
        except aiohttp.ClientConnectorError as exc:
            raise ServiceUnavailable(
                f"upstream '{self.name}' at {self.base_url} is not reachable "
                f"({exc.os_error.strerror or exc.__class__.__name__}); is it running?"
            ) from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(f"upstream '{self.name}' did not answer in time") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(
                f"upstream '{self.name}' failed: {exc.__class__.__name__}: {exc}"
            ) from exc
        if response.status >= 400:
            raw = await response.read()
            response.release()
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise self._status_error(response.status, _error_message(raw), retry_after)
        return response

    def _status_error(
        self, status: int, message: str, retry_after: float | None = None
    ) -> KeelError:
        text = f"upstream '{self.name}' answered {status}: {message}"
        if status in (400, 413, 422):
            return InvalidRequest(text)
        if status in (429, 503):
            return ServiceUnavailable(text, retry_after=retry_after)
        return UpstreamError(text)

    async def send(self, op: Operation, payload: dict[str, Any]) -> ProviderResponse:
        response = await self._post(op, payload)
        try:
            raw = await response.read()
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(f"upstream '{self.name}' did not finish in time") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"upstream '{self.name}' broke off its answer") from exc
        finally:
            response.release()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"upstream '{self.name}' answered with invalid JSON") from exc
        if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
            raise UpstreamError(f"upstream '{self.name}' answered without 'choices'")
        return ProviderResponse(body=body, usage=_usage_from(body))

    async def open_stream(self, op: Operation, payload: dict[str, Any]) -> _SSEStream:
        response = await self._post(op, payload)
        return _SSEStream(self.name, response)

    async def count_usage(self, op: Operation, payload: dict[str, Any], output_text: str) -> Usage:
        if self._token_counter is not None:
            return await self._token_counter.count(op, payload, output_text)
        return Usage(estimate_tokens(_prompt_text(op, payload)), estimate_tokens(output_text))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            # Let aiohttp finish closing transports before the loop goes away.
            await asyncio.sleep(0)
