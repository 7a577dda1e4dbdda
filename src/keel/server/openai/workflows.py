"""`model: "workflow:NAME"` and `model: "agent:NAME"` on /v1/chat/completions.

The chat input becomes the run's input: the last user message, as the JSON object it
holds or as text in the input schema's one string field (`text` for agents). The run's
output is the answer; with `stream: true` a workflow whose last step is an llm step
streams that step as it is generated, and any other run's output comes as one chunk.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi.responses import Response

from keel.auth.keys import Principal
from keel.errors import InvalidRequest
from keel.server.admin.workflows import workflow_service
from keel.server.responses import EventStream as SSEResponse
from keel.server.responses import json_response
from keel.server.services import Services
from keel.workflows.definitions import Kind
from keel.workflows.service import Streamed
from keel.workflows.spec import AGENT_PREFIX, WORKFLOW_PREFIX

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def is_workflow_model(model: Any) -> bool:
    return isinstance(model, str) and model.startswith((WORKFLOW_PREFIX, AGENT_PREFIX))


def _last_user_text(messages: Any) -> str:
    for message in reversed(messages or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    raise InvalidRequest(
        "a workflow needs a user message: its text is the workflow's input", param="messages"
    )


def chat_input(kind: Kind, schema: dict[str, Any], messages: Any) -> Any:
    text = _last_user_text(messages)
    if kind == "agent":
        return {"text": text}
    if text.lstrip().startswith("{"):
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            return value
    properties = schema.get("properties") or {}
    value = {}
    if "messages" in properties:
        value["messages"] = messages
    strings = [
        n for n, s in properties.items() if isinstance(s, dict) and s.get("type") == "string"
    ]
    required = [n for n in schema.get("required") or [] if n in strings]
    field = (
        "text" if "text" in properties or not properties else (required or strings or ["text"])[0]
    )
    value[field] = text
    return value


def _content(output: Any) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, dict) and isinstance(output.get("text"), str) and len(output) == 1:
        return str(output["text"])
    if isinstance(output, dict) and isinstance(output.get("answer"), str):
        return str(output["answer"])
    return orjson.dumps(output).decode()


async def workflow_chat(
    services: Services, principal: Principal, wire: dict[str, Any], trace_id: str = ""
) -> Response:
    """The run as a chat completion; `trace_id` (the request's) becomes the run's trace."""
    model: str = wire["model"]
    kind: Kind = "agent" if model.startswith(AGENT_PREFIX) else "workflow"
    name = model.partition(":")[2]
    flows = workflow_service(services)
    workflow = await flows.compiled(principal.project_id, kind, name)
    value = chat_input(kind, workflow.spec.input, wire.get("messages"))
    stream = bool(wire.get("stream"))
    result = await flows.run(
        principal, kind, name, value, wait=True, stream=stream, trace_id=trace_id
    )
    if isinstance(result, Streamed):
        headers = {**_SSE_HEADERS, **result.headers, **_run_headers(result.run)}
        return SSEResponse(result.events, None, headers)
    created = int(time.time())
    completion_id = f"chatcmpl-{result['id']}"
    text = _content(result["output"])
    if stream:
        events = _one_chunk(completion_id, created, model, text)
        return SSEResponse(events, None, {**_SSE_HEADERS, **_run_headers(result)})
    body = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }
    return json_response(body, headers=_run_headers(result))


def _run_headers(run: dict[str, Any]) -> dict[str, str]:
    return {"X-Keel-Workflow-Run": run["id"]}  # the trace id header is the request's own


async def _one_chunk(
    completion_id: str, created: int, model: str, text: str
) -> AsyncIterator[bytes]:
    base = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
    }
    first = {
        **base,
        "choices": [
            {"index": 0, "finish_reason": None, "delta": {"role": "assistant", "content": text}}
        ],
    }
    last = {**base, "choices": [{"index": 0, "finish_reason": "stop", "delta": {}}]}
    yield b"data: " + orjson.dumps(first) + b"\n\n"
    yield b"data: " + orjson.dumps(last) + b"\n\ndata: [DONE]\n\n"
