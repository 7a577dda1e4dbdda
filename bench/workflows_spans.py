"""What a run's span payloads cost: turning each step's input and output into capped JSON
as the run ends (`SpanContent.render`), per step, on the process's own CPU.

Prints JSON: microseconds per step for an llm step's payloads (its messages and answer),
for a 100 KB output cut at the cap, hashed instead of kept (trace_content off), and masked
by a guard policy's PII (e-mail) and secrets scanners. Run: `python bench/workflows_spans.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any


def _trace(steps: int, output: Any) -> Any:
    from keel.auth.keys import Principal
    from keel.tracing.model import RequestTrace
    from keel.workflows.engine import Result, step_attributes

    principal = Principal("k", "default", "admin")
    trace = RequestTrace(lambda _t: None, "t", "workflow", principal, {"input": {}},
                         start_ns=time.time_ns())  # fmt: skip
    messages = [{"role": "user", "content": "Summarise this for ada@example.com: " + "x" * 300}]
    for i in range(steps):
        span = trace.begin(f"workflow.s{i}")
        RequestTrace.end(span)
        span.attributes = step_attributes("llm", Result(output, 12, 0.0001, messages, 7, 5))
    return trace


def _per_step(content: Any, output: Any, rounds: int, steps: int = 10) -> float:
    traces = [_trace(steps, output) for _ in range(rounds)]
    started = time.process_time()
    for trace in traces:
        content.render(trace)
    return round((time.process_time() - started) / rounds / steps * 1e6, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()

    from keel.guard.policy import Policy
    from keel.workflows.spans import SpanContent, policy_mask

    answer = {"text": "A short answer of a few words, as a model gives it."}
    big = {"text": "y" * 100_000}
    policy = Policy.from_dict({"name": "p", "input": [
        {"type": "pii", "action": "mask", "options": {"entities": ["EMAIL"]}},
        {"type": "secrets", "action": "redact"}]})  # fmt: skip
    masked = SpanContent(mask=policy_mask(policy))
    rounds = args.rounds
    results = {
        "rounds": rounds,
        "steps_per_run": 10,
        "llm_step_us": _per_step(SpanContent(), answer, rounds),
        "output_100kb_capped_us": _per_step(SpanContent(), big, rounds // 10),
        "hashed_trace_content_off_us": _per_step(SpanContent(keep=False), answer, rounds),
        "masked_pii_email_and_secrets_us": _per_step(masked, answer, rounds // 10),
        "load_average": [round(x, 1) for x in os.getloadavg()],
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
