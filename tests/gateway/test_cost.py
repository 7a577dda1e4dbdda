from __future__ import annotations

from keel.gateway.cost import cost
from keel.providers.base import Usage
from keel.routing.table import Target


def test_cost_uses_the_versions_prices_per_million_tokens() -> None:
    target = Target("m@1", None, "m", input_price_per_m=0.5, output_price_per_m=1.5)  # type: ignore[arg-type]
    assert cost(target, Usage(2_000, 1_000)) == 0.001 + 0.0015
    assert cost(Target("free@1", None, "m"), Usage(10**6, 10**6)) == 0.0  # type: ignore[arg-type]
