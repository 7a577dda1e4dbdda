"""A cached answer replayed as an OpenAI SSE stream, and a streamed answer assembled back
into the completion it stands for (so a streamed miss can be stored once complete)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"
_PIECE_CHARS = 64  # replayed content is cut into pieces of about this many characters


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def _pieces(text: str) -> list[str]:
    """Cut at spaces into pieces of about _PIECE_CHARS, so clients see a real stream."""
    pieces: list[str] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + _PIECE_CHARS)
        if end < len(text):
            space = text.rfind(" ", start + 1, end)
            end = space if space > start else end
        pieces.append(text[start:end])
        start = end
    return pieces


async def replay_sse(
    response: dict[str, Any], model_name: str, include_usage: bool
) -> AsyncIterator[bytes]:
    """The chunks a provider would have streamed for `response`, then `data: [DONE]`."""
    chat = response.get("object", "chat.completion") != "text_completion"
    base = {
        "id": response.get("id") or "chatcmpl-cached",
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(response.get("created") or time.time()),
        "model": model_name,
    }
    if response.get("system_fingerprint"):
        base["system_fingerprint"] = response["system_fingerprint"]
    for choice in response.get("choices") or ():
        index = choice.get("index", 0)
        if not chat:
            for piece in _pieces(choice.get("text") or ""):
                yield _event({**base, "choices": [{"index": index, "text": piece,
                                                   "finish_reason": None}]})  # fmt: skip
            finish = choice.get("finish_reason")
            yield _event({**base, "choices": [{"index": index, "text": "",
                                               "finish_reason": finish}]})  # fmt: skip
            continue
        message = choice.get("message") or {}

        def chunk(delta: dict[str, Any], finish: str | None = None, i: int = index) -> bytes:
            return _event({**base, "choices": [{"index": i, "delta": delta, "logprobs": None,
                                                "finish_reason": finish}]})  # fmt: skip

        yield chunk({"role": message.get("role", "assistant"), "content": ""})
        if message.get("refusal"):
            yield chunk({"refusal": message["refusal"]})
        for piece in _pieces(message.get("content") or ""):
            yield chunk({"content": piece})
        for position, call in enumerate(message.get("tool_calls") or ()):
            yield chunk({"tool_calls": [{"index": position, **call}]})
        yield chunk({}, choice.get("finish_reason") or "stop")
    if include_usage and response.get("usage") is not None:
        yield _event({**base, "choices": [], "usage": response["usage"]})
    yield DONE


class CompletionAssembler:
    """Feed it the chunks of a stream; `completion()` is the whole answer, or None while
    the stream is incomplete (no finish reason yet for some choice)."""

    def __init__(self) -> None:
        self._meta: dict[str, Any] = {}
        self._choices: dict[int, dict[str, Any]] = {}
        self._usage: dict[str, Any] | None = None
        self._text = False

    def add(self, chunk: dict[str, Any]) -> None:
        for name in ("id", "created", "model", "system_fingerprint"):
            if chunk.get(name) is not None:
                self._meta.setdefault(name, chunk[name])
        if chunk.get("object") == "text_completion":
            self._text = True
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        for part in chunk.get("choices") or ():
            index = int(part.get("index", 0))
            choice = self._choices.setdefault(
                index, {"content": [], "role": "assistant", "tools": {}, "finish": None}
            )
            if part.get("finish_reason"):
                choice["finish"] = part["finish_reason"]
            if self._text:
                choice["content"].append(part.get("text") or "")
                continue
            delta = part.get("delta") or {}
            if delta.get("role"):
                choice["role"] = delta["role"]
            if isinstance(delta.get("content"), str):
                choice["content"].append(delta["content"])
            if delta.get("refusal"):
                choice["refusal"] = choice.get("refusal", "") + delta["refusal"]
            for call in delta.get("tool_calls") or ():
                slot = choice["tools"].setdefault(
                    call.get("index", 0), {"type": "function", "function": {"arguments": ""}}
                )
                if call.get("id"):
                    slot["id"] = call["id"]
                if call.get("type"):
                    slot["type"] = call["type"]
                function = call.get("function") or {}
                if function.get("name"):
                    slot["function"]["name"] = function["name"]
                slot["function"]["arguments"] += function.get("arguments") or ""

    def completion(self) -> dict[str, Any] | None:
        if not self._choices or any(c["finish"] is None for c in self._choices.values()):
            return None
        choices = []
        for index in sorted(self._choices):
            choice = self._choices[index]
            text = "".join(choice["content"])
            if self._text:
                choices.append({"index": index, "text": text, "logprobs": None,
                                "finish_reason": choice["finish"]})  # fmt: skip
                continue
            message: dict[str, Any] = {"role": choice["role"], "content": text or None}
            if choice["tools"]:
                message["tool_calls"] = [choice["tools"][i] for i in sorted(choice["tools"])]
            if choice.get("refusal"):
                message["refusal"] = choice["refusal"]
            elif not choice["tools"] and message["content"] is None:
                message["content"] = ""
            choices.append({"index": index, "message": message, "logprobs": None,
                            "finish_reason": choice["finish"]})  # fmt: skip
        body: dict[str, Any] = {
            "id": self._meta.get("id", "chatcmpl-assembled"),
            "object": "text_completion" if self._text else "chat.completion",
            "created": self._meta.get("created", int(time.time())),
            "model": self._meta.get("model", ""),
            "choices": choices,
        }
        if self._meta.get("system_fingerprint"):
            body["system_fingerprint"] = self._meta["system_fingerprint"]
        if self._usage is not None:
            body["usage"] = self._usage
        return body


def assemble_completion(chunks: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The completion a whole stream of chunks stands for; None if it was cut short."""
    assembler = CompletionAssembler()
    for chunk in chunks:
        assembler.add(chunk)
    return assembler.completion()
