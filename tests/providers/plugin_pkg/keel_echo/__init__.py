"""Provider kind `echo`: answers a chat completion with the last user message.

A plugin needs only this: a Provider, a factory of a ProviderConfig, and a `register`
hook named by a `keel.providers` entry point (see pyproject.toml next to this folder).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from keel.providers.base import Operation, ProviderResponse, Usage
from keel.providers.plugins import ProviderConfig, ProviderPlugins


def _last_user_text(payload: dict[str, Any]) -> str:
    for message in reversed(payload.get("messages", [])):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            return str(message["content"])
    return ""


class _Stream:
    def __init__(self, model: str, text: str):
        self._chunks = [
            {"id": "echo", "object": "chat.completion.chunk", "created": int(time.time()),
             "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            for delta, finish in [({"role": "assistant", "content": text}, None), ({}, "stop")]
        ]  # fmt: skip

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        for chunk in self._chunks:
            yield chunk

    def buffered(self) -> bool:
        return False

    async def aclose(self) -> None:
        pass


class EchoProvider:
    def __init__(self, config: ProviderConfig):
        self.name = config.name
        self._prefix = str(config.options.get("prefix", ""))

    def _text(self, payload: dict[str, Any]) -> str:
        return self._prefix + _last_user_text(payload)

    async def send(self, op: Operation, payload: dict[str, Any]) -> ProviderResponse:
        text = self._text(payload)
        usage = Usage(len(_last_user_text(payload).split()), len(text.split()))
        body = {
            "id": "echo",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": payload.get("model", ""),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text},
                 "finish_reason": "stop"}
            ],
            "usage": usage.as_dict(),
        }  # fmt: skip
        return ProviderResponse(body=body, usage=usage)

    async def open_stream(self, op: Operation, payload: dict[str, Any]) -> _Stream:
        return _Stream(str(payload.get("model", "")), self._text(payload))

    async def count_usage(self, op: Operation, payload: dict[str, Any], output_text: str) -> Usage:
        return Usage(len(_last_user_text(payload).split()), len(output_text.split()))

    async def close(self) -> None:
        pass


def register(providers: ProviderPlugins) -> None:
    providers.register("echo", EchoProvider)
