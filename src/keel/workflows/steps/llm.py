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
from keel.cost import cost
from keel.errors import UpstreamError
from keel.gateway.answer import Answer
from keel.providers.base import Usage
from keel.routing.table import Target
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


def usage_split(body: dict[str, Any]) -> tuple[int | None, int | None]:
    """(prompt tokens, completion tokens) of an answer, None where it does not say."""
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None, None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (
        prompt if isinstance(prompt, int) else None,
        completion if isinstance(completion, int) else None,
    )


def target_of(runtime: Runtime, project: str, route: str | None, ref: str | None) -> Target | None:
    """The target that answered (by the route and target the answer's headers name)."""
    if route is None or ref is None:
        return None
    found = runtime.gateway.route.router.table.lookup(project, route)
    if found is None:
        return None
    for target in (*(t for t, _ in found.weighted), *found.fallbacks):
        if target.ref == ref:
            return target
    return None


def call_cost(runtime: Runtime, project: str, answer: Answer) -> float | None:
    """What one gateway call cost, from the same price table the gateway charges with;
    0 for a cache hit (nothing was sent), None when the target is unknown."""
    headers = answer.headers
    if str(headers.get("X-Keel-Cache", "")).startswith("hit"):
        return 0.0
    target = target_of(runtime, project, headers.get("X-Keel-Route"), headers.get("X-Keel-Target"))
    prompt, completion = usage_split(answer.body)
    if target is None or prompt is None:
        return None
    return cost(target, Usage(prompt, completion or 0))


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
        prompt, completion = usage_split(answer.body)
        return Result(
            output,
            usage_tokens(answer.body),
            call_cost(self.runtime, run.principal.project_id, answer),
            _input_of(body),
            prompt,
            completion,
        )


def _input_of(body: dict[str, Any]) -> Any:
    return body.get("messages") or body.get("prompt") or body.get("prompt_variables")
