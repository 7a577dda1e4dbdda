"""`n` > 1 for upstreams that answer one choice per call: n calls, merged into one answer.

llama.cpp's server (and most upstreams Keel runs) ignore `n`, so Keel asks for each
choice separately unless the provider says it answers `n` itself (`supports_n`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from keel.providers.base import Operation, Provider, ProviderResponse, Usage, answers_n


def choice_count(payload: dict[str, Any]) -> int:
    n = payload.get("n")
    return n if isinstance(n, int) and n > 1 else 1


async def send_choices(
    provider: Provider, op: Operation, payload: dict[str, Any]
) -> ProviderResponse:
    """The upstream's answer with `payload["n"]` choices, indexed 0..n-1, usage summed.

    With a seed, call i gets seed + i: the choices differ (as OpenAI's do) and the same
    request still gets the same answer.
    """
    n = choice_count(payload)
    if n == 1 or answers_n(provider):
        return await provider.send(op, payload)
    one = {key: value for key, value in payload.items() if key != "n"}
    seed = one.get("seed")
    payloads = [one if seed is None else {**one, "seed": seed + i} for i in range(n)]
    calls = [asyncio.ensure_future(provider.send(op, each)) for each in payloads]
    try:
        answers = await asyncio.gather(*calls)
    except BaseException:
        for call in calls:  # one failed: the attempt failed, stop paying for the others
            call.cancel()
        raise
    return await _merge(provider, op, payloads, answers)


async def _merge(
    provider: Provider,
    op: Operation,
    payloads: list[dict[str, Any]],
    answers: list[ProviderResponse],
) -> ProviderResponse:
    body = dict(answers[0].body)
    choices: list[dict[str, Any]] = []
    prompt_tokens = completion_tokens = 0
    for payload, answer in zip(payloads, answers, strict=True):
        own = [c for c in answer.body["choices"] if isinstance(c, dict)]
        first = len(choices)
        choices.extend({**choice, "index": first + i} for i, choice in enumerate(own))
        usage = answer.usage
        if usage is None:  # count each call, whose prompt the upstream read once more
            usage = await provider.count_usage(op, payload, _text(op, own))
        prompt_tokens += usage.prompt_tokens
        completion_tokens += usage.completion_tokens
    body["choices"] = choices
    usage = Usage(prompt_tokens, completion_tokens)
    body["usage"] = usage.as_dict()
    return ProviderResponse(body=body, usage=usage)


def _text(op: Operation, choices: list[dict[str, Any]]) -> str:
    if op == "chat/completions":
        return "".join((c.get("message") or {}).get("content") or "" for c in choices)
    return "".join(c.get("text") or "" for c in choices)
