"""Steps 5 and 9 of the request path: the input guard and the output guard.

The input guard runs after admission (rate limits protect the scanners too) on the
rendered messages; it may block (400 guardrail_violation), redact, or anonymize PII into
placeholders that the output guard restores in the answer, streamed or not. Scanners are
CPU-bound and run on a worker thread.

What the trace keeps is what the upstream saw: placeholders and redactions, never the
values a policy took out. A blocked request's messages are masked before they are kept.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.calls import Call, CallState
from keel.errors import GuardrailViolation
from keel.guard.anonymize import Deanonymizer
from keel.guard.base import ACTION_RANK, Verdict
from keel.guard.policy import Policy, RequestState
from keel.guard.service import GuardService
from keel.guard.streaming import StreamingOutputGuard


def _action(verdicts: Sequence[Verdict]) -> str:
    return max((v.action for v in verdicts), key=ACTION_RANK.__getitem__, default="allow")


def violation(policy: Policy, verdicts: Sequence[Verdict], where: str) -> GuardrailViolation:
    """The client's error: which scanner and policy blocked, never what was found."""
    blocker = next((v for v in verdicts if v.action == "block"), None)
    scanner = blocker.scanner if blocker is not None else "guard"
    kinds = sorted({f.kind for f in blocker.findings})[:5] if blocker is not None else []
    found = f" ({', '.join(kinds)})" if kinds else ""
    return GuardrailViolation(
        f"the {where} was blocked by guard policy {policy.name!r}: scanner {scanner!r}"
        f"{found}; rephrase the request, or ask an admin about the policy",
        param="messages" if where == "request" else None,
        code=scanner,
    )


@functools.cache
def _maskers() -> tuple[Any, Any]:
    from keel.guard.pii import PiiScanner
    from keel.guard.secrets import SecretsScanner

    return PiiScanner(mode="mask"), SecretsScanner(mode="redact")


def masked_for_record(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages with PII and secrets masked: what a blocked request's trace keeps."""
    from keel.guard.base import ScanContext

    pii, secrets = _maskers()
    context = ScanContext()

    def mask(text: str) -> str:
        for scanner in (pii, secrets):
            verdict = scanner.scan(text, context)
            if verdict.redacted is not None:
                text = verdict.redacted
        return text

    out = []
    for message in messages:
        new = dict(message)
        content = message.get("content")
        if isinstance(content, str):
            new["content"] = mask(content)
        elif isinstance(content, list):
            new["content"] = [
                {**p, "text": mask(str(p.get("text", "")))}
                if isinstance(p, dict) and p.get("type") == "text"
                else p
                for p in content
            ]
        out.append(new)
    return out


def _messages(op: str, body: dict[str, Any]) -> list[dict[str, Any]] | None:
    if op == "chat/completions":
        messages = body.get("messages")
        return messages if isinstance(messages, list) else None
    prompt = body.get("prompt")
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else None


def _with_messages(op: str, body: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
    if op == "chat/completions":
        return {**body, "messages": messages}
    return {**body, "prompt": messages[0]["content"] if messages else ""}


@dataclass
class RequestGuard:
    """One request's policy and scan state, from the input guard to the output guard."""

    policy: Policy
    state: RequestState
    call: CallState  # where the verdicts go (the guard steps' spans, the strongest action)
    verdicts: list[Verdict] = field(default_factory=list)

    def _record(self, name: str, start_ns: int, verdicts: list[Verdict]) -> None:
        self.call.guarded(name, start_ns, self.policy.name, verdicts, _action(verdicts))

    async def answer(self, op: str, choices: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Scan a whole answer's choices in place, restoring placeholders for the client.

        Returns the choices as the trace keeps them (scanned, placeholders not restored);
        raises GuardrailViolation when a choice is blocked.
        """
        start = time.time_ns()
        texts = [_choice_text(op, c) for c in choices]
        results = await asyncio.to_thread(self._scan_all, texts)
        verdicts = [v for _, found, _ in results for v in found]
        self._record("guard.output", start, verdicts)
        if any(blocked for _, _, blocked in results):
            raise violation(self.policy, verdicts, "answer")
        recorded = []
        restore = Deanonymizer(self.state.vault).restore if self.policy.spec.deanonymize else None
        for choice, text, (scanned, _, _) in zip(choices, texts, results, strict=True):
            if text is None:
                recorded.append(choice)
                continue
            recorded.append(_set_choice_text(op, choice, scanned))
            client = _set_choice_text(op, choice, restore(scanned) if restore else scanned)
            choice.clear()
            choice.update(client)
        return recorded

    def _scan_all(self, texts: list[str | None]) -> list[tuple[str, list[Verdict], bool]]:
        return [
            ("", [], False) if t is None else self.policy.scan_output_text(t, self.state)
            for t in texts
        ]

    def stream(self) -> StreamGuard:
        return StreamGuard(self)


class StreamGuard:
    """The output guard of one stream: a sliding-window guard per choice index."""

    def __init__(self, guard: RequestGuard):
        self.guard = guard
        self._windows: dict[int, StreamingOutputGuard] = {}
        self._verdicts: list[Verdict] = []
        self._start = time.time_ns()
        self.recorded: list[str] = []  # released text before restoration, for the trace

    def _window(self, index: int) -> StreamingOutputGuard:
        window = self._windows.get(index)
        if window is None:
            window = self._windows[index] = self.guard.policy.stream(self.guard.state)
        return window

    def feed(self, index: int, text: str) -> str:
        """The text that may go out now for this chunk; raises when the policy blocks."""
        step = self._window(index).feed(text)
        return self._released(step)

    def finish(self, index: int) -> str:
        """The end of a choice: the rest of its text, once scanned."""
        window = self._windows.pop(index, None)
        if window is None:
            return ""
        return self._released(window.finish())

    def finish_all(self) -> dict[int, str]:
        return {index: self.finish(index) for index in sorted(self._windows)}

    def _released(self, step: Any) -> str:
        self._verdicts.extend(step.verdicts)
        if step.blocked:
            self.close()
            raise violation(self.guard.policy, step.verdicts, "answer")
        self.recorded.append(step.raw)
        return str(step.text)

    def close(self) -> None:
        """Record the output guard's verdicts on the trace (once)."""
        if self._start:
            verdicts = _merge(self._verdicts)
            self.guard._record("guard.output", self._start, verdicts)
            self._start = 0


def _merge(verdicts: list[Verdict]) -> list[Verdict]:
    """One verdict per scanner over a stream's windows: the strongest, latency summed."""
    merged: dict[str, Verdict] = {}
    for verdict in verdicts:
        seen = merged.get(verdict.scanner)
        if seen is None:
            merged[verdict.scanner] = verdict
            continue
        strongest = verdict if ACTION_RANK[verdict.action] > ACTION_RANK[seen.action] else seen
        merged[verdict.scanner] = dataclasses.replace(
            strongest,
            score=max(seen.score, verdict.score),
            latency_ms=seen.latency_ms + verdict.latency_ms,
            findings=(seen.findings + verdict.findings)[:20],
        )
    return list(merged.values())


def _choice_text(op: str, choice: dict[str, Any]) -> str | None:
    if op == "chat/completions":
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else None
    else:
        content = choice.get("text")
    return content if isinstance(content, str) else None


def _set_choice_text(op: str, choice: dict[str, Any], text: str) -> dict[str, Any]:
    if op == "chat/completions":
        return {**choice, "message": {**choice["message"], "content": text}}
    return {**choice, "text": text}


class GuardInput:
    """Step 5: choose the call's policy and scan its input (block, redact, anonymize)."""

    def __init__(self, service: GuardService):
        self.service = service

    async def run(self, call: Call, state: CallState) -> None:
        policy = await self.service.policy_for(call.principal, state.model, call.client_headers)
        if policy is None:
            return
        messages = _messages(call.op, state.body)
        if messages is None:
            return
        start = time.time_ns()
        result = await asyncio.to_thread(policy.run_input, messages)
        guard = RequestGuard(policy, result.state, state)
        guard._record("guard.input", start, result.verdicts)
        if result.blocked:
            if state.trace is not None:  # the trace keeps no raw PII, even of a blocked request
                masked = await asyncio.to_thread(masked_for_record, messages)
                state.body = _with_messages(call.op, state.body, masked)
            raise violation(policy, result.verdicts, "request")
        state.body = _with_messages(call.op, state.body, result.messages)
        state.guard = guard


class GuardOutput:
    """Step 9 for whole answers (and cache hits): scan the choices, restore placeholders
    for the client; returns the choices as the trace keeps them."""

    async def run(self, call: Call, state: CallState, choices: Any) -> Any:
        guard: RequestGuard | None = state.guard
        if guard is None or not isinstance(choices, list):
            return choices
        return await guard.answer(call.op, choices)
