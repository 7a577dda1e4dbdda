from __future__ import annotations

from datetime import UTC, datetime

import pytest

from keel.auth.keys import Principal
from keel.errors import BudgetExceeded, PermissionDenied
from keel.gateway.pipeline import GatewayRequest
from keel.limits.admission import Admission, budget_period
from keel.limits.memory import MemoryBackend
from keel.limits.spec import NO_PROJECT_LIMITS, Limits
from keel.providers.base import Usage
from keel.routing.table import Target
from tests.limits.test_memory import Clock

PRICED = Target("m@1", None, "m", input_price_per_m=1e6, output_price_per_m=1e6)  # type: ignore[arg-type]


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_budget_periods_follow_the_utc_calendar() -> None:
    day = budget_period("day", at("2026-12-31T23:00:00"))
    assert (day.id, day.reset_s) == ("d2026-12-31", 3600)
    month = budget_period("month", at("2026-02-28T12:00:00"))
    assert (month.id, month.reset_s) == ("m2026-02", 12 * 3600)


def request_for(principal: Principal) -> GatewayRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    return GatewayRequest("chat/completions", body, principal, "trace")


async def test_a_spent_daily_budget_comes_back_the_next_day() -> None:
    clock = Clock(at("2026-12-01T23:59:00"))
    admission = Admission(MemoryBackend(clock), lambda _: NO_PROJECT_LIMITS, clock=clock)
    limits = Limits.model_validate({"budget": {"amount": 5, "period": "day"}})
    principal = Principal(key_id="k", project_id="p", role="app", limits=limits)
    admitted = await admission(request_for(principal))
    assert admitted.settlement is not None
    await admitted.settlement.settle(PRICED, Usage(3, 2))  # 5 tokens at 1 per token
    with pytest.raises(BudgetExceeded, match="budget of 5"):
        await admission(request_for(principal))
    clock.now = at("2026-12-02T00:00:01")
    assert (await admission(request_for(principal))).settlement is not None


async def test_a_request_without_limits_or_scopes_gets_no_ticket() -> None:
    admission = Admission(MemoryBackend(), lambda _: NO_PROJECT_LIMITS)
    request = request_for(Principal(key_id="k", project_id="p", role="app"))
    assert await admission(request) is request
    with pytest.raises(PermissionDenied, match="inference"):
        await admission(request_for(Principal(key_id="v", project_id="p", role="viewer")))
