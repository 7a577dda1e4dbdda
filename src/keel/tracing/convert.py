"""Turn a finished `RequestTrace` into store rows and spans with their attributes.

Runs once per request, on the event loop between requests (see `recorder.py`), so it
builds plain dicts and lists and nothing else. Attribute names follow the OpenTelemetry
GenAI semantic conventions, plus `keel.*` for what they lack.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

import orjson

from keel.cost import cost
from keel.routing.table import Target
from keel.tracing.model import OPERATIONS, RequestTrace, Step, error_type, http_status

# Request fields that map to gen_ai.request.* attributes.
_REQUEST_ATTRIBUTES = (
    ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
    ("max_tokens", "gen_ai.request.max_tokens"),
    ("frequency_penalty", "gen_ai.request.frequency_penalty"),
    ("presence_penalty", "gen_ai.request.presence_penalty"),
    ("seed", "gen_ai.request.seed"),
)
# Span names of the gateway's steps, made once instead of once per span.
_STEP_SPANS = {
    name: f"keel.{name}"
    for name in ("auth", "prompt", "admit", "guard.input", "guard.output", "cache", "route",
                 "embed", "retrieve")
}  # fmt: skip


def span(
    trace_id: str,
    span_id: str,
    parent_id: str | None,
    name: str,
    kind: str,
    start_ns: int,
    end_ns: int,
    status: str,
    attributes: dict[str, Any],
) -> dict[str, Any]:
    """One span as stored (kind: server | internal | client; status: ok | error)."""
    return {
        "trace_id": trace_id, "span_id": span_id, "parent_id": parent_id, "name": name,
        "kind": kind, "start_ns": start_ns, "end_ns": end_ns, "status": status,
        "attributes": attributes,
    }  # fmt: skip


@dataclass(slots=True)
class Converted:
    """One trace as it is stored: the `traces` row, its spans as one JSON array, and the
    (target, error type) of its failed upstream attempts, for the metrics."""

    trace: dict[str, Any]
    spans: str
    errors: list[tuple[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"trace": self.trace, "spans": self.spans, "errors": self.errors}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Converted:
        errors = [(str(target), str(error)) for target, error in data.get("errors", ())]
        return cls(data["trace"], data["spans"], errors)


def _span_ids(count: int) -> str:
    """`count` span ids of 16 hex digits, one after the other (one system call)."""
    return os.urandom(8 * count).hex()


def _input_text(trace: RequestTrace) -> str | None:
    body = trace.body
    if trace.op == "chat/completions":
        value: Any = body.get("messages")
    elif trace.op == "completions":
        value = body.get("prompt")
    else:
        value = body.get("input")
    if value is None:
        return None
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _output_text(trace: RequestTrace) -> str | None:
    output = trace.output
    if output is None:
        return None
    if isinstance(output, str):
        return output
    if isinstance(output, list) and all(isinstance(piece, str) for piece in output):
        return "".join(output)
    parts: list[str] = []
    for choice in output:  # a whole answer's choices
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else choice.get("text")
        if isinstance(text, str):
            parts.append(text)
    return "".join(parts)


def _finish_reasons(trace: RequestTrace) -> list[str]:
    choices: Any = trace.output if isinstance(trace.output, list) else None
    if trace.last_chunk is not None:
        choices = trace.last_chunk.get("choices")
    reasons = []
    for choice in choices or ():
        if isinstance(choice, dict) and isinstance(choice.get("finish_reason"), str):
            reasons.append(choice["finish_reason"])
    return reasons


def _content(text: str | None, keep: bool) -> tuple[str | None, str | None, int | None]:
    """(stored text, sha256, size in bytes): the text when content is kept, else the rest."""
    if text is None:
        return None, None, None
    if keep:
        return text, None, None
    data = text.encode()
    return None, hashlib.sha256(data).hexdigest(), len(data)


def _attempt_attributes(
    trace: RequestTrace, step: Step, target: Target, operation: str, number: int
) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "keel.step": step.name,
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": getattr(target.provider, "name", "unknown"),
        "gen_ai.request.model": target.upstream_model,
        "keel.target": target.ref,
        "keel.attempt": number,
    }
    if step.error is not None:
        attributes["error.type"] = step.error
    elif trace.target is not None and target.ref == trace.target.ref:  # the one that answered
        if trace.response_model:
            attributes["gen_ai.response.model"] = trace.response_model
        if trace.usage is not None:
            attributes["gen_ai.usage.input_tokens"] = trace.usage.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = trace.usage.completion_tokens
    return attributes


def _step_attributes(trace: RequestTrace, step: Step) -> dict[str, Any]:
    name = step.name
    attributes: dict[str, Any] = {"keel.step": name}
    if name == "route" and trace.route is not None:
        attributes["keel.route"] = trace.route
        if trace.target is not None:
            attributes["keel.target"] = trace.target.ref
        attributes["keel.attempts"] = trace.attempts
    elif name == "prompt" and trace.prompt is not None:
        attributes["keel.prompt.name"], attributes["keel.prompt.version"] = trace.prompt
    elif step.verdicts is not None:
        attributes["keel.guard.policy"] = trace.guard_policy
        attributes["keel.guard.verdicts"] = [_verdict(v) for v in step.verdicts]
    elif step.attributes is not None:
        attributes.update(step.attributes)
    if step.error is not None:
        attributes["error.type"] = step.error
    return attributes


def _verdict(verdict: Any) -> dict[str, Any]:
    """A guard verdict as a span attribute: what was found, never the found text itself."""
    return {
        "scanner": verdict.scanner,
        "score": round(float(verdict.score), 4),
        "action": verdict.action,
        "latency_ms": round(float(verdict.latency_ms), 3),
        "findings": [
            {"kind": f.kind, "detail": f.detail, "value_hash": f.value_hash}
            for f in verdict.findings[:20]
        ],
    }


def _step_spans(
    trace: RequestTrace, operation: str, span_ids: str
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """The spans of the trace's steps, and the (target, error type) of failed attempts.

    `span_ids` holds the root span's id, then one for each step.
    """
    trace_id, end_ns = trace.trace_id, trace.end_ns
    spans: list[dict[str, Any]] = []
    errors: list[tuple[str, str]] = []
    root_id = span_ids[:16]
    ids = {"request": root_id}
    attempt = 0
    offset = 0
    for step in trace.steps:
        offset += 16
        span_id = span_ids[offset : offset + 16]
        target = step.target
        if target is not None:
            attempt += 1
            name = f"{operation} {target.upstream_model}"
            kind = "client"
            attributes = _attempt_attributes(trace, step, target, operation, attempt)
            if step.error is not None:
                errors.append((target.ref, step.error))
        else:
            ids.setdefault(step.name, span_id)
            name = _STEP_SPANS.get(step.name) or f"keel.{step.name}"
            kind = "internal"
            attributes = _step_attributes(trace, step)
        spans.append(span(trace_id, span_id, ids.get(step.parent, root_id), name, kind,
                          step.start_ns, step.end_ns or end_ns,
                          "error" if step.error else "ok", attributes))  # fmt: skip
    return spans, errors


def convert(trace: RequestTrace, keep_content: bool) -> Converted:
    """The rows for one finished trace; content only when `keep_content`."""
    body = trace.body
    operation = OPERATIONS.get(trace.op, trace.op)
    model = body.get("model")
    model = model if isinstance(model, str) else None
    error = trace.error
    status = "ok" if error is None else "error"
    error_name = error_type(error) if error is not None else None
    status_code = http_status(error)
    target = trace.target
    provider = getattr(target.provider, "name", None) if target is not None else None
    usage = trace.usage
    if target is not None and usage is not None:
        trace.cost = cost(target, usage)
    duration_ms = (trace.end_ns - trace.start_ns) / 1e6
    ttft_ms = None
    if trace.first_token_ns is not None:
        ttft_ms = (trace.first_token_ns - trace.start_ns) / 1e6
    user = body.get("user")
    user = user if isinstance(user, str) else None
    input_text, input_hash, input_bytes = _content(_input_text(trace), keep_content)
    output_text, output_hash, output_bytes = _content(_output_text(trace), keep_content)
    reasons = _finish_reasons(trace)
    principal = trace.principal

    root: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "keel.project": principal.project_id,
        "keel.key_id": principal.key_id,
        "keel.status": status,
        "http.response.status_code": status_code,
    }
    if model is not None:
        root["gen_ai.request.model"] = model
    if trace.embedding_model is not None:
        root["gen_ai.response.model"] = trace.embedding_model
    elif trace.response_model:
        root["gen_ai.response.model"] = trace.response_model
    if provider is not None:
        root["gen_ai.provider.name"] = provider
    for key, name in _REQUEST_ATTRIBUTES:
        value = body.get(key)
        if value is not None and isinstance(value, int | float) and not isinstance(value, bool):
            root[name] = value
    if isinstance(body.get("max_completion_tokens"), int):
        root["gen_ai.request.max_tokens"] = body["max_completion_tokens"]
    stop = body.get("stop")
    if stop is not None:
        root["gen_ai.request.stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if usage is not None:
        root["gen_ai.usage.input_tokens"] = usage.prompt_tokens
        root["gen_ai.usage.output_tokens"] = usage.completion_tokens
    if reasons:
        root["gen_ai.response.finish_reasons"] = reasons
    if trace.route is not None:
        root["keel.route"] = trace.route
    if target is not None:
        root["keel.target"] = target.ref
    if trace.attempts:
        root["keel.attempts"] = trace.attempts
    if trace.prompt is not None:
        root["keel.prompt.name"], root["keel.prompt.version"] = trace.prompt
    if user is not None:
        root["keel.user"] = user
    if trace.session_id is not None:
        root["keel.session_id"] = trace.session_id
    for key, value in trace.metadata.items():
        root[f"keel.metadata.{key}"] = value
    if trace.cost is not None:
        root["keel.cost"] = trace.cost
    if ttft_ms is not None:
        root["keel.ttft_ms"] = round(ttft_ms, 3)
    root["keel.stream"] = bool(body.get("stream"))
    if trace.guard_policy is not None:
        root["keel.guard.policy"] = trace.guard_policy
        root["keel.guard.action"] = trace.guard_action
    if trace.cache is not None:
        root["keel.cache"] = trace.cache
        if trace.saved_cost is not None:
            root["keel.cache.saved_cost"] = trace.saved_cost
        if trace.saved_ms is not None:
            root["keel.cache.saved_ms"] = round(trace.saved_ms, 3)
    if error_name is not None:
        root["error.type"] = error_name
    if input_hash is not None:
        root["keel.input.sha256"], root["keel.input.bytes"] = input_hash, input_bytes
    if output_hash is not None:
        root["keel.output.sha256"], root["keel.output.bytes"] = output_hash, output_bytes

    span_ids = _span_ids(len(trace.steps) + 1)
    steps, errors = _step_spans(trace, operation, span_ids)
    name = f"{operation} {model}" if model else operation
    spans = [span(trace.trace_id, span_ids[:16], None, name, "server", trace.start_ns,
                  trace.end_ns, status, root), *steps]  # fmt: skip

    prompt = trace.prompt
    row: dict[str, Any] = {
        "trace_id": trace.trace_id,
        "project_id": principal.project_id,
        "key_id": principal.key_id,
        "start_us": trace.start_ns // 1000,
        "duration_ms": duration_ms,
        "ttft_ms": ttft_ms,
        "operation": operation,
        "model": model[:200] if model else None,
        "route": trace.route,
        "target": target.ref if target is not None else None,
        "provider": provider,
        "user": user[:256] if user else None,
        "session_id": trace.session_id,
        "prompt_name": prompt[0] if prompt else None,
        "prompt_version": prompt[1] if prompt else None,
        "status": status,
        "error_type": error_name,
        "http_status": status_code,
        "attempts": trace.attempts,
        "input_tokens": usage.prompt_tokens if usage is not None else None,
        "output_tokens": usage.completion_tokens if usage is not None else None,
        "cost": trace.cost,
        "metadata": trace.metadata,
        "input": input_text,
        "output": output_text,
        "input_sha256": input_hash,
        "output_sha256": output_hash,
        "input_bytes": input_bytes,
        "output_bytes": output_bytes,
        "guard_policy": trace.guard_policy,
        "guard_action": trace.guard_action,
        "cache": trace.cache,
        "saved_cost": trace.saved_cost,
        "saved_ms": trace.saved_ms,
    }
    return Converted(row, orjson.dumps(spans).decode(), errors)
