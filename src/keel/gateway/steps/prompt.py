"""Step 2: a stored prompt named by the request ("support@production" + variables) becomes
the request's messages, and the call remembers which version it used."""

from __future__ import annotations

from keel.calls import Call, CallState
from keel.prompts.resolver import PromptResolver


class ResolvePrompt:
    def __init__(self, resolver: PromptResolver):
        self.resolver = resolver

    async def run(self, call: Call, state: CallState) -> None:
        if call.op != "chat/completions":
            return  # /v1/completions has a `prompt` of its own: plain text
        span = state.begin("prompt")
        resolved = await self.resolver(call.principal.project_id, state.body)
        if resolved is not None:
            state.body, state.prompt = resolved.body, resolved.prompt
        state.end(span)
