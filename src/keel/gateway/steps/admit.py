"""Step 3: scopes, rate limits, concurrency and budgets; an admitted call holds a
settlement that the gateway settles once, when the call ends.

Runs after the prompt is resolved (a prompt may pick the model and max_tokens that scopes
and limits are checked against), and before the guard, so rate limits shield the scanners
as well as the models.
"""

from __future__ import annotations

from keel.calls import Call, CallState
from keel.limits.admission import Admission


class Admit:
    def __init__(self, admission: Admission):
        self.admission = admission

    async def run(self, call: Call, state: CallState) -> None:
        span = state.begin("admit")
        prompt = state.prompt.name if state.prompt is not None else None
        admitted = await self.admission(call.principal, state.body, prompt)
        state.body, state.settlement = admitted.body, admitted.settlement
        state.limit_headers = admitted.headers
        state.end(span)
