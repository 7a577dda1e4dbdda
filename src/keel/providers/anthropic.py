"""Adapter for Anthropic's Messages API: OpenAI chat bodies in, OpenAI answers and chunks out.

Translates messages, sampling options and function tools both ways, so clients keep one wire.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import aiohttp
import orjson

from keel.errors import (
    InvalidRequest,
    UpstreamError,
)
from keel.providers.base import Operation, ProviderResponse, Usage
from keel.providers.http import ResponseStream, UpstreamHTTP
from keel.providers.openai_compat import estimate_tokens

# Anthropic requires max_tokens; OpenAI clients usually leave it out.
DEFAULT_MAX_TOKENS = 1024

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# Options that change what the client gets back and have no Anthropic counterpart are
# refused; options that only tune sampling (seed, penalties, logit_bias) are dropped.
_UNSUPPORTED = ("logprobs", "top_logprobs", "audio", "modalities", "prediction")

Block = dict[str, Any]


def _invalid(message: str, param: str = "messages") -> InvalidRequest:
    return InvalidRequest(message, param=param)


def _text_blocks(content: Any, where: str) -> list[Block]:
    """Text blocks from a string or a list of {type: text} parts; empty text is left out."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _invalid(f"{where}.content must be a string or a list of content parts")
    blocks: list[Block] = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text":
            raise _invalid(
                f"{where}.content[{index}] is of type {kind!r}; Anthropic models take only "
                "text parts here so far, send the content as text"
            )
        text = part.get("text")
        if not isinstance(text, str):
            raise _invalid(f"{where}.content[{index}].text must be a string")
        if text:
            blocks.append({"type": "text", "text": text})
    return blocks


def _tool_use_blocks(tool_calls: Any, where: str) -> list[Block]:
    if not isinstance(tool_calls, list):
        raise _invalid(f"{where}.tool_calls must be a list")
    blocks: list[Block] = []
    for index, call in enumerate(tool_calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _invalid(f"{where}.tool_calls[{index}] needs function.name")
        if not isinstance(call.get("id"), str) or not call["id"]:
            raise _invalid(f"{where}.tool_calls[{index}] needs an id")
        try:
            arguments = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError as exc:
            raise _invalid(
                f"{where}.tool_calls[{index}].function.arguments is not valid JSON"
            ) from exc
        if not isinstance(arguments, dict):
            raise _invalid(f"{where}.tool_calls[{index}].function.arguments must be an object")
        blocks.append(
            {"type": "tool_use", "id": call["id"], "name": function["name"], "input": arguments}
        )
    return blocks


def _tool_result_block(message: dict[str, Any], where: str) -> Block:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise _invalid(f"{where} has role 'tool' but no tool_call_id")
    text = "".join(block["text"] for block in _text_blocks(message.get("content"), where))
    return {"type": "tool_result", "tool_use_id": call_id, "content": text}


def _conversation(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """(system text, Anthropic messages): system turns hoisted, same-role turns merged."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _invalid(f"{where} must be an object with a role and content")
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(b["text"] for b in _text_blocks(message.get("content"), where))
            continue
        if role == "user":
            blocks = _text_blocks(message.get("content"), where)
        elif role == "assistant":
            blocks = _text_blocks(message.get("content"), where)
            if message.get("tool_calls"):
                blocks += _tool_use_blocks(message["tool_calls"], where)
        elif role == "tool":
            role, blocks = "user", [_tool_result_block(message, where)]
        else:
            raise _invalid(f"{where} has role {role!r}; send 'tool' messages for tool results")
        if not blocks:
            raise _invalid(f"{where} has no content; Anthropic models refuse empty messages")
        # The Messages API wants user and assistant turns to alternate.
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    if not turns:
        raise _invalid("messages must hold at least one user or assistant message")
    return "\n\n".join(system), turns


def _tools(tools: Any) -> list[Block]:
    if not isinstance(tools, list):
        raise _invalid("tools must be a list", param="tools")
    translated: list[Block] = []
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type") != "function":
            raise _invalid(f"tools[{index}]: only type 'function' tools are supported", "tools")
        if not isinstance(function.get("name"), str):
            raise _invalid(f"tools[{index}].function.name must be a string", "tools")
        entry: Block = {
            "name": function["name"],
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            entry["description"] = function["description"]
        translated.append(entry)
    return translated


def _tool_choice(choice: Any, parallel: Any) -> Block:
    if choice is None or choice == "auto":
        translated: Block = {"type": "auto"}
    elif choice == "required":
        translated = {"type": "any"}
    elif choice == "none":
        translated = {"type": "none"}
    elif isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str):
        translated = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise _invalid(
            "tool_choice must be 'auto', 'required', 'none' or "
            "{type: function, function: {name: …}}",
            "tool_choice",
        )
    if parallel is False and translated["type"] != "none":
        translated["disable_parallel_tool_use"] = True
    return translated


def to_messages_request(payload: dict[str, Any], stream: bool) -> dict[str, Any]:
    """An OpenAI chat-completions body as an Anthropic Messages API body."""
    for name in _UNSUPPORTED:
        if payload.get(name):
            raise _invalid(f"{name} is not supported for Anthropic models; leave it out", name)
    response_format = payload.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") not in (None, "text"):
        raise _invalid(
            "response_format other than 'text' is not supported for Anthropic models yet; "
            "ask for JSON in the prompt, or use a tool whose parameters are your schema",
            "response_format",
        )
    messages = payload.get("messages")
    if not isinstance(messages, list):
        raise _invalid("messages must be a list")
    system, turns = _conversation(messages)
    max_tokens = payload.get("max_tokens") or payload.get("max_completion_tokens")
    body: dict[str, Any] = {
        "model": payload.get("model"),
        "messages": turns,
        "max_tokens": max_tokens or DEFAULT_MAX_TOKENS,
    }
    if system:
        body["system"] = system
    temperature = payload.get("temperature")
    if temperature is not None:
        if not 0 <= temperature <= 1:
            raise _invalid(
                f"temperature must be between 0 and 1 for Anthropic models (got {temperature})",
                "temperature",
            )
        body["temperature"] = temperature
    for name in ("top_p", "top_k"):
        if payload.get(name) is not None:
            body[name] = payload[name]
    stop = payload.get("stop")
    if stop:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if payload.get("user"):
        body["metadata"] = {"user_id": payload["user"]}
    if payload.get("tools"):
        body["tools"] = _tools(payload["tools"])
        body["tool_choice"] = _tool_choice(
            payload.get("tool_choice"), payload.get("parallel_tool_calls")
        )
    if stream:
        body["stream"] = True
    return body


def _prompt_tokens(usage: dict[str, Any]) -> int:
    """Anthropic counts cached prompt tokens apart; OpenAI's prompt_tokens includes them."""
    return sum(
        value
        for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        if isinstance(value := usage.get(key), int)
    )


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("output_tokens"), int):
        return None
    return Usage(_prompt_tokens(raw), raw["output_tokens"])


def _tool_call(block: Block) -> dict[str, Any]:
    arguments = orjson.dumps(block.get("input") or {}).decode()
    return {
        "id": block.get("id"),
        "type": "function",
        "function": {"name": block.get("name"), "arguments": arguments},
    }


def to_chat_completion(answer: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic message as an OpenAI `chat.completion` body."""
    blocks = [b for b in answer["content"] if isinstance(b, dict)]
    text = "".join(str(b.get("text", "")) for b in blocks if b.get("type") == "text")
    tool_calls = [_tool_call(b) for b in blocks if b.get("type") == "tool_use"]
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    elif not text:
        message["content"] = ""
    body: dict[str, Any] = {
        "id": answer.get("id"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": answer.get("model"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": _FINISH_REASONS.get(answer.get("stop_reason") or "", "stop"),
                "logprobs": None,
            }
        ],
    }
    usage = _usage(answer.get("usage"))
    if usage is not None:
        body["usage"] = usage.as_dict()
    return body


def _describe_error(body: Any) -> str:
    """Anthropic's `error.message` (with its type), or the start of whatever came instead."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and "message" in error:
        kind = error.get("type")
        return f"{error['message']} ({kind})" if kind else str(error["message"])
    return str(body)[:500]


def _error_message(raw: bytes) -> str:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")[:500] or "(empty body)"
    return _describe_error(body)


class _MessagesStream(ResponseStream):
    """Anthropic stream events, relayed as OpenAI `chat.completion.chunk` dicts."""

    def __init__(self, provider: str, response: aiohttp.ClientResponse):
        super().__init__(provider, response)
        self._id = ""
        self._model = ""
        self._created = int(time.time())
        self._prompt_tokens = 0
        self._completion_tokens = 0
        self._tool_indexes: dict[int, int] = {}  # Anthropic block index -> OpenAI tool index

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }

    def _usage_chunk(self) -> dict[str, Any]:
        usage = Usage(self._prompt_tokens, self._completion_tokens)
        return {**self._chunk({}), "choices": [], "usage": usage.as_dict()}

    def _start(self, event: dict[str, Any]) -> dict[str, Any]:
        message = event.get("message") or {}
        self._id = str(message.get("id", ""))
        self._model = str(message.get("model", ""))
        self._prompt_tokens = _prompt_tokens(message.get("usage") or {})
        return self._chunk({"role": "assistant", "content": ""})

    def _block_start(self, event: dict[str, Any]) -> dict[str, Any] | None:
        block = event.get("content_block") or {}
        if block.get("type") == "tool_use":
            index = len(self._tool_indexes)
            self._tool_indexes[event.get("index", -1)] = index
            call = {**_tool_call(block), "index": index}
            call["function"]["arguments"] = ""  # the input follows as input_json_delta events
            return self._chunk({"tool_calls": [call]})
        if block.get("type") == "text" and block.get("text"):
            return self._chunk({"content": block["text"]})
        return None

    def _block_delta(self, event: dict[str, Any]) -> dict[str, Any] | None:
        delta = event.get("delta") or {}
        if delta.get("type") == "text_delta" and delta.get("text"):
            return self._chunk({"content": delta["text"]})
        if delta.get("type") == "input_json_delta" and delta.get("partial_json"):
            index = self._tool_indexes.get(event.get("index", -1), 0)
            call = {"index": index, "function": {"arguments": delta["partial_json"]}}
            return self._chunk({"tool_calls": [call]})
        return None  # thinking and signature deltas have no OpenAI counterpart

    def _message_delta(self, event: dict[str, Any]) -> dict[str, Any]:
        usage = event.get("usage") or {}
        if isinstance(usage.get("output_tokens"), int):
            self._completion_tokens = usage["output_tokens"]
        # Newer API versions repeat the input counts here; they are final, so they win.
        if isinstance(usage.get("input_tokens"), int):
            self._prompt_tokens = _prompt_tokens(usage)
        reason = (event.get("delta") or {}).get("stop_reason")
        return self._chunk({}, _FINISH_REASONS.get(reason or "", "stop"))

    def _translate(self, event: dict[str, Any]) -> dict[str, Any] | None:
        kind = event.get("type")
        if kind == "message_start":
            return self._start(event)
        if kind == "content_block_start":
            return self._block_start(event)
        if kind == "content_block_delta":
            return self._block_delta(event)
        if kind == "message_delta":
            return self._message_delta(event)
        if kind == "error":
            raise UpstreamError(
                f"upstream '{self._provider}' failed mid-stream: {_describe_error(event)}"
            )
        return None  # ping, content_block_stop and event types added later

    def buffered(self) -> bool:
        # Several Anthropic events make no chunk (ping, content_block_stop): an event on
        # hand does not promise a chunk without waiting, so chunks go out one by one.
        return False

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        async with aclosing(self._data()) as events:
            async for event in events:
                if not isinstance(event, dict):
                    continue
                if event.get("type") == "message_stop":
                    yield self._usage_chunk()
                    return
                chunk = self._translate(event)
                if chunk is not None:
                    yield chunk
        raise UpstreamError(f"upstream '{self._provider}' ended the stream before message_stop")


def _prompt_text(payload: dict[str, Any]) -> str:
    parts: list[str] = []
    for message in payload.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "\n".join(parts)


class AnthropicProvider:
    """Talks to the Messages API at one base URL with a pooled keep-alive session."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        api_key: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 600.0,
        anthropic_version: str = "2023-06-01",
    ):
        self.name = name
        self.base_url = base_url.rstrip("/")
        headers = {"content-type": "application/json", "anthropic-version": anthropic_version}
        if api_key:
            headers["x-api-key"] = api_key
        self._http = UpstreamHTTP(
            name,
            base_url,
            headers,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            error_message=_error_message,
            unreachable_hint="check its base_url",
            overloaded=(429, 503, 529),  # 529 is Anthropic's "overloaded"
        )

    def _check_op(self, op: Operation) -> None:
        if op != "chat/completions":
            raise InvalidRequest(
                f"provider '{self.name}' (Anthropic) supports chat completions only; "
                "send requests for this model to /v1/chat/completions",
                param="model",
            )

    async def send(self, op: Operation, payload: dict[str, Any]) -> ProviderResponse:
        self._check_op(op)
        response = await self._http.post("v1/messages", to_messages_request(payload, stream=False))
        answer = await self._http.read_json(response)
        if not isinstance(answer, dict) or not isinstance(answer.get("content"), list):
            raise UpstreamError(f"upstream '{self.name}' answered without 'content'")
        body = to_chat_completion(answer)
        return ProviderResponse(body=body, usage=_usage(answer.get("usage")))

    async def open_stream(self, op: Operation, payload: dict[str, Any]) -> _MessagesStream:
        self._check_op(op)
        response = await self._http.post("v1/messages", to_messages_request(payload, stream=True))
        return _MessagesStream(self.name, response)

    async def count_usage(self, op: Operation, payload: dict[str, Any], output_text: str) -> Usage:
        # Anthropic reports usage on every answer; this estimate covers only broken streams.
        return Usage(estimate_tokens(_prompt_text(payload)), estimate_tokens(output_text))

    async def close(self) -> None:
        await self._http.close()
