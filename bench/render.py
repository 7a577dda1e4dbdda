"""Measure prompt rendering: µs per compile and per render of a 2 KB, 10-variable template.

`python bench/render.py` prints JSON on stdout. Renders reuse the compiled version (as the
gateway's cache does) and include the variables check; plain Jinja is shown for scale.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import jinja2

from keel.prompts.render import PromptSandbox
from keel.prompts.spec import PromptContent

SYSTEM = """\
You are the support assistant of {{ company }}, answering customers of {{ product }}.
Answer in {{ language }}, in a {{ tone }} tone, in at most {{ max_words }} words.
{% if premium %}This customer pays for premium support: offer a call back within one hour.
{% else %}This customer is on the free plan: point to the documentation first.
{% endif %}
Known open incidents:
{% for incident in incidents %}- {{ loop.index }}. {{ incident|trim }}
{% endfor %}
Policies you must follow:
- Never promise refunds; say that billing will review the request within two days.
- Never ask for passwords, API keys or card numbers, even partially.
- If the customer is angry, acknowledge it once, then move to the fix.
- If you do not know, say so and offer to open a ticket; do not guess.
- Quote error messages exactly as the customer wrote them.
- Keep answers short: lists of steps are better than paragraphs.
- Mention the status page ({{ status_url }}) when an incident may explain the problem.
Customer profile: {{ customer.name|title }} ({{ customer.plan|upper }}), since {{ customer.since }}.
"""
USER = "{{ question }}\n\n(Sent from the web form; reply as {{ company }} support.)"
PADDING = "Style guide: be precise, be brief, be kind; prefer plain words to jargon.\n"
VARIABLES: dict[str, Any] = {
    "company": "Acme Cloud",
    "product": "Acme Storage",
    "language": "English",
    "tone": "friendly",
    "max_words": 120,
    "premium": True,
    "incidents": ["EU-West latency is elevated", "Uploads over 5 GB may time out"],
    "status_url": "https://status.example.com",
    "customer": {"name": "ada lovelace", "plan": "team", "since": "2021"},
    "question": "My uploads fail with 'connection reset'. What should I do?",
}


def content() -> PromptContent:
    system = SYSTEM
    while len(system) + len(USER) < 2048:
        system += PADDING
    types = {"max_words": "integer", "premium": "boolean", "incidents": "array",
             "customer": "object"}  # fmt: skip
    return PromptContent.model_validate(
        {
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": USER},
            ],
            "variables": [{"name": n, "type": types.get(n, "string")} for n in VARIABLES],
        }
    )


def per_call_us(action: Callable[[], object], repeat: int, rounds: int = 5) -> float:
    """Median over rounds of the mean time per call, in µs."""
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(repeat):
            action()
        timings.append((time.perf_counter() - started) / repeat * 1e6)
    return round(statistics.median(timings), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--renders", type=int, default=2000, help="Renders per round.")
    parser.add_argument("--compiles", type=int, default=100, help="Compiles per round.")
    args = parser.parse_args()

    sandbox = PromptSandbox()
    prompt = content()
    compiled = sandbox.compile(prompt)
    compiled.render(VARIABLES)  # warm up
    plain = [jinja2.Environment().from_string(m.content) for m in prompt.messages]

    result = {
        "template_chars": sum(len(m.content) for m in prompt.messages),
        "variables": len(VARIABLES),
        "rendered_chars": sum(len(m["content"]) for m in compiled.render(VARIABLES)),
        "render_us": per_call_us(lambda: compiled.render(VARIABLES), args.renders),
        "compile_us": per_call_us(lambda: sandbox.compile(prompt), args.compiles),
        "plain_jinja_render_us": per_call_us(
            lambda: [t.render(VARIABLES) for t in plain], args.renders
        ),
        "python": platform.python_version(),
        "jinja2": jinja2.__version__,
        "machine": platform.machine(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
