"""Steps that need no model: transform (a sandboxed value template), branch (the first
case whose condition holds), retrieve (knowledge-base search) and guard (a policy scan)."""

from __future__ import annotations

import asyncio
from typing import Any

from keel.errors import GuardrailViolation, InvalidRequest, ServiceUnavailable
from keel.guard.service import HEADER
from keel.workflows.compiled import CompiledStep
from keel.workflows.engine import Result, RunState
from keel.workflows.runtime import Runtime


class Transform:
    async def __call__(
        self, step: CompiledStep, scope: dict[str, Any], run: RunState, key: str
    ) -> Result:
        return Result(step.values["value"](scope))


class Branch:
    async def __call__(
        self, step: CompiledStep, scope: dict[str, Any], run: RunState, key: str
    ) -> Result:
        for index in range(len(step.spec.body.cases)):
            if step.values[f"case{index}"](scope):
                return Result({"case": index})
        return Result({"case": "else"})


class Retrieve:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    async def __call__(
        self, step: CompiledStep, scope: dict[str, Any], run: RunState, key: str
    ) -> Result:
        knowledge = self.runtime.knowledge()
        if knowledge is None:
            raise ServiceUnavailable("knowledge bases are not available in this server")
        body = step.spec.body
        query = str(step.values["query"](scope))
        hits = await knowledge.search(run.principal.project_id, body.kb, query, body.top_k)
        found = [
            {
                "text": h.text,
                "source": h.source,
                "score": round(h.score, 4),
                "document_id": h.document_id,
            }
            for h in hits
        ]
        context = "\n\n".join(f"[{i + 1}] {h['text']}" for i, h in enumerate(found))
        return Result({"hits": found, "context": context}, input={"query": query})


class Guard:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    async def __call__(
        self, step: CompiledStep, scope: dict[str, Any], run: RunState, key: str
    ) -> Result:
        guard = self.runtime.guard
        if guard is None:
            raise ServiceUnavailable("guard policies are not available in this server")
        body = step.spec.body
        text = str(step.values["text"](scope))
        headers = {HEADER: body.policy} if body.policy else {}
        policy = await guard.policy_for(run.principal, "workflow", headers)
        if policy is None:
            return Result({"blocked": False, "action": "allow", "text": text})
        if body.source == "user":
            result = await asyncio.to_thread(policy.run_input, [{"role": "user", "content": text}])
        else:
            result = await asyncio.to_thread(policy.run_untrusted, text, body.source)
        scanned = result.text or _last(result.messages) or text
        if result.blocked and body.on_block == "fail":
            scanners = sorted({v.scanner for v in result.verdicts if v.action == "block"})
            raise GuardrailViolation(
                f"guard policy blocked the text ({', '.join(scanners) or 'policy'})",
                code=scanners[0] if scanners else None,
            )
        return Result(
            {
                "blocked": result.blocked,
                "action": result.action,
                "text": "" if result.blocked else scanned,
            }
        )


def _last(messages: list[dict[str, Any]]) -> str:
    if not messages:
        return ""
    content = messages[-1].get("content")
    if not isinstance(content, str):
        raise InvalidRequest("guard step: the scanned message has no text")
    return content
