"""The llm step: one chat call through `Gateway.handle`, as the run's caller.

A stored prompt (by name, `name@label`) or the step's own messages; with `schema`, the
answer is asked for as JSON under that schema (llama.cpp decodes it under a grammar) and
parsed into `output.json`. The step that ends a streamed run hands its stream up instead.
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson

from keel.calls import Call
from keel.errors import UpstreamError
from keel.gateway.answer import Answer
from keel.workflows.compiled import CompiledStep
from keel.workflows.engine import Result, RunState
from keel.workflows.runtime import Runtime


def call_id() -> str:
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def request_body(step: CompiledStep, scope: dict[str, Any]) -> dict[str, Any]:
    spec = step.spec.body
    variables = step.values["variables"](scope)
    body: dict[str, Any]
    if spec.prompt is not None:
        name, _, label = spec.prompt.partition("@")
        reference = {"name": name, "variables": variables, **({"label": label} if label else {})}
        if spec.model is not None:
            body = {"model": spec.model, "prompt": reference}
        else:
            body = {"model": f"prompt:{spec.prompt}", "prompt_variables": variables}
    else:
        body = {"model": spec.model, "messages": step.values["messages"](scope)}
    if spec.max_tokens is not None:
        body["max_tokens"] = spec.max_tokens
    if spec.temperature is not None:
        body["temperature"] = spec.temperature
    if spec.schema_ is not None:
        body["response_format"] = json_format(spec.schema_)
    return body


def json_format(schema: dict[str, Any]) -> dict[str, Any]:
    """JSON under `schema`: OpenAI's json_schema, plus the `schema` llama.cpp's server reads
    for its grammar."""
    return {"type": "json_object", "schema": schema}


def answer_text(body: dict[str, Any]) -> str:
    choices = body.get("choices") or [{}]
    message = choices[0].get("message") or {}
    content = message.get("content")
    return content if isinstance(content, str) else ""


def usage_tokens(body: dict[str, Any]) -> int | None:
    usage = body.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("total_tokens"), int):
        return int(usage["total_tokens"])
    return None


def metadata(run: RunState, key: str) -> dict[str, str]:
    trace = run.trace.trace_id if run.trace is not None else ""
    return {"workflow_run": run.run_id, "workflow_step": key[:200], "workflow_trace": trace}


class LlmCall:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    async def __call__(
        self, step: CompiledStep, scope: dict[str, Any], run: RunState, key: str
    ) -> Result:
        body = request_body(step, scope)
        streams = run.stream_key == key
        if streams:
            body["stream"] = True
        call = Call("chat/completions", body, run.principal, call_id(), metadata=metadata(run, key))
        answer = await self.runtime.gateway.handle(call)
        if not isinstance(answer, Answer):
            run.stream = answer
            return Result(None)
        text = answer_text(answer.body)
        output: dict[str, Any] = {"text": text}
        if step.spec.body.schema_ is not None:
            try:
                output["json"] = orjson.loads(text)
            except orjson.JSONDecodeError:
                raise UpstreamError(
                    f"the model's answer is not JSON ({text[:80]!r}); use a model that honours "
                    "response_format, or drop schema"
                ) from None
        return Result(output, usage_tokens(answer.body), input=_input_of(body))


def _input_of(body: dict[str, Any]) -> Any:
    return body.get("messages") or body.get("prompt") or body.get("prompt_variables")
