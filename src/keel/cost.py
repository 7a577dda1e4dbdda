"""What a request cost, from the model version's prices per million tokens.

Kept below the gateway: limits settle spend with it and tracing records it.
"""

from __future__ import annotations

from keel.providers.base import Usage
from keel.routing.table import Target


def cost(target: Target, usage: Usage) -> float:
    """Currency units (as the prices are given) for `usage` on `target`."""
    return (
        usage.prompt_tokens * target.input_price_per_m
        + usage.completion_tokens * target.output_price_per_m
    ) / 1_000_000
