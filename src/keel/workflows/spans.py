"""What a run's spans carry besides timings: each step's and each tool call's input and
output as JSON, capped, and kept or masked the way the trace store keeps request bodies.

Steps put Python values on their spans (a reference, nothing more); `SpanContent.render`
turns them into JSON text once, as the run ends: in a worker thread when a guard policy
masks them, because the PII and secrets scanners are CPU work.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from keel.tracing.model import RequestTrace

if TYPE_CHECKING:
    from keel.guard.policy import Policy

INPUT, OUTPUT = "keel.input", "keel.output"
MAX_CHARS = 8192  # of JSON text kept per input or output
# Of JSON text kept over all of one run's spans: a map over thousands of items would
# otherwise make a trace of hundreds of megabytes. Past it, spans keep sizes only.
MAX_RUN_CHARS = 2_000_000
# Masking reads a little past the cut, so a secret that the cut splits is still seen whole.
_SLACK = 256
# Scanner types whose findings a trace must not keep, and the actions that take them out.
_MASKED_TYPES = ("pii", "secrets")
Mask = Callable[[str], str]


def to_json(value: Any) -> str:
    """The value as JSON text (anything JSON cannot hold as its string form)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=str).decode()
    except (TypeError, orjson.JSONEncodeError):
        return orjson.dumps(repr(value)).decode()


def mask_text(text: str) -> str:
    """PII masked and secrets redacted with every recogniser: what the trace store keeps of
    a blocked request (and of a run whose policy could not be built)."""
    from keel.gateway.steps.guard import masked_for_record

    masked = masked_for_record([{"role": "user", "content": text}])
    return str(masked[0]["content"])


def policy_mask(policy: Policy | None) -> Mask | None:
    """The policy's own PII and secrets scanners (its entities, thresholds and options) as
    a mask: PII masked, secrets redacted, whatever the policy does to a request with them
    (block, anonymize, mask or redact); None when no such scanner would take them out."""
    if policy is None:
        return None
    from keel.guard.base import ScanContext
    from keel.guard.policy import GuardResources, build_scanner

    resources = GuardResources()  # PII and secrets scanners need none of its models
    scanners = [
        build_scanner(
            spec.model_copy(update={"action": "mask" if spec.type == "pii" else "redact"}),
            resources,
        )
        for spec in policy.spec.input
        if spec.type in _MASKED_TYPES and spec.action != "flag"
    ]
    if not scanners:
        return None

    def mask(text: str) -> str:
        context = ScanContext()
        for scanner in scanners:
            verdict = scanner.scan(text, context)
            if verdict.redacted is not None:
                text = verdict.redacted
        return text

    return mask


@dataclass(frozen=True, slots=True)
class SpanContent:
    """How a run's span payloads are kept: `keep` is the trace_content setting (off: only
    each payload's size and SHA-256, as for request bodies); `mask` the guard's masking."""

    keep: bool = True
    mask: Mask | None = None
    limit: int = MAX_CHARS
    run_limit: int = MAX_RUN_CHARS

    def shown(self, value: Any) -> str:
        """The payload as stored: JSON, masked, cut at `limit` with a marker that says so."""
        text = to_json(value)
        size = len(text)
        head = text[: self.limit + _SLACK] if size > self.limit else text
        if self.mask is not None:
            head = self.mask(head)
        if size <= self.limit:
            return head
        return f"{head[: self.limit]}…[truncated: {size} characters in all]"

    def render(self, trace: RequestTrace) -> None:
        """Turn the payloads on the run's spans into what the store keeps (once, at the end);
        with a mask, the run's own input and output on the root span are masked too. Past
        `run_limit` characters kept, the rest keep their size only (`keel.payload_dropped`)."""
        left = self.run_limit
        for step in trace.steps:
            attributes = step.attributes
            if attributes is None:
                continue
            for name in (INPUT, OUTPUT):
                if name not in attributes:
                    continue
                value = attributes.pop(name)
                if self.keep and left > 0:
                    text = attributes[name] = self.shown(value)
                    left -= len(text)
                    continue
                data = to_json(value).encode()
                attributes[f"{name}.bytes"] = len(data)
                if self.keep:
                    attributes["keel.payload_dropped"] = True
                else:
                    attributes[f"{name}.sha256"] = hashlib.sha256(data).hexdigest()
        if self.mask is not None and self.keep:
            body = trace.body
            if body.get("input") is not None:
                trace.body = {**body, "input": self.mask(to_json(body["input"]))}
            if isinstance(trace.output, str):
                trace.output = self.mask(trace.output)

    @staticmethod
    def drop(trace: RequestTrace) -> None:
        """Keep no payload at all (rendering failed): spans say they were dropped, and the
        run's own input and output are left out of the root span."""
        for step in trace.steps:
            attributes = step.attributes
            if attributes is not None and (INPUT in attributes or OUTPUT in attributes):
                attributes.pop(INPUT, None)
                attributes.pop(OUTPUT, None)
                attributes["keel.payload_dropped"] = True
        trace.body = {key: value for key, value in trace.body.items() if key != "input"}
        trace.output = None

    @property
    def slow(self) -> bool:
        """Rendering scans text (run it in a worker thread)."""
        return self.mask is not None
