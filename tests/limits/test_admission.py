from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from keel.auth.keys import Principal
from keel.errors import BudgetExceeded, PermissionDenied, RateLimited
from keel.events import Change, LocalChangeBus
from keel.limits.admission import PROJECTS_TOPIC, Admission, Admitted, SpendSink, budget_period
from keel.limits.memory import MemoryBackend
from keel.limits.spec import NO_PROJECT_LIMITS, Limits, ProjectLimits
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


BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def admit(admission: Admission, principal: Principal) -> Admitted:
    return await admission(principal, BODY)


async def test_a_spent_daily_budget_comes_back_the_next_day() -> None:
    clock = Clock(at("2026-12-01T23:59:00"))
    admission = Admission(MemoryBackend(clock), lambda _: NO_PROJECT_LIMITS, clock=clock)
    limits = Limits.model_validate({"budget": {"amount": 5, "period": "day"}})
    principal = Principal(key_id="k", project_id="p", role="app", limits=limits)
    admitted = await admit(admission, principal)
    assert admitted.settlement is not None
    await admitted.settlement.settle(PRICED, Usage(3, 2))  # 5 tokens at 1 per token
    with pytest.raises(BudgetExceeded, match="budget of 5"):
        await admit(admission, principal)
    clock.now = at("2026-12-02T00:00:01")
    assert (await admit(admission, principal)).settlement is not None


async def test_a_request_without_limits_or_scopes_gets_no_ticket() -> None:
    admission = Admission(MemoryBackend(), lambda _: NO_PROJECT_LIMITS)
    admitted = await admit(admission, Principal(key_id="k", project_id="p", role="app"))
    assert admitted.settlement is None
    assert admitted.body is BODY  # nothing to change either
    with pytest.raises(PermissionDenied, match="inference"):
        await admit(admission, Principal(key_id="v", project_id="p", role="viewer"))


async def test_changed_limits_apply_to_the_next_request() -> None:
    # Admission keeps what it checks per key and route; a change must not leave it stale.
    events = LocalChangeBus()
    project = {"p": ProjectLimits.model_validate({"rpm": 10})}
    admission = Admission(MemoryBackend(Clock()), lambda pid: project[pid], events=events)
    key = Principal(key_id="k", project_id="p", role="app", limits=Limits(rpm=5))
    first = await admit(admission, key)
    assert first.headers["x-ratelimit-limit-requests"] == "5"  # the tighter of key and project

    project["p"] = ProjectLimits.model_validate({"routes": {"m": {"rpm": 1}}})
    events.publish(Change(PROJECTS_TOPIC, "p", "p"))
    second = await admit(admission, key)
    assert second.headers["x-ratelimit-limit-requests"] == "1"  # the route's, now
    with pytest.raises(RateLimited, match="route m"):
        await admit(admission, key)

    project["p"] = NO_PROJECT_LIMITS
    events.publish(Change(PROJECTS_TOPIC, "*", "p"))
    reread = Principal(key_id="k", project_id="p", role="app", limits=Limits(rpm=2))
    with pytest.raises(RateLimited, match="key k allows 2"):  # two were counted this minute
        await admit(admission, reread)


async def test_a_new_budget_period_counts_from_zero() -> None:
    clock = Clock(at("2026-12-31T23:59:59"))
    admission = Admission(MemoryBackend(clock), lambda _: NO_PROJECT_LIMITS, clock=clock)
    limits = Limits.model_validate({"budget": {"amount": 5, "period": "month"}})
    principal = Principal(key_id="k", project_id="p", role="app", limits=limits)
    december = await admit(admission, principal)
    assert december.settlement is not None
    await december.settlement.settle(PRICED, Usage(3, 2))
    with pytest.raises(BudgetExceeded, match=r"in 1s\)"):
        await admit(admission, principal)
    clock.now = at("2027-01-01T00:00:00")
    assert (await admit(admission, principal)).settlement is not None
    clock.now = at("2026-12-31T23:59:59.5")  # a clock stepped back lands in December again
    with pytest.raises(BudgetExceeded):
        await admit(admission, principal)


class Audits(SpendSink):
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def add_spend(self, subject: str, period: str, amount: float, tokens: int) -> None:
        pass

    def audit(self, project_id: str, action: str, target_type: str, target_id: str,
              after: dict[str, Any]) -> None:  # fmt: skip
        self.warnings.append(f"{target_id}:{after['period']}")


async def warn_all(admission: Admission, keys: list[Principal]) -> None:
    for key in keys:
        spent = await admit(admission, key)
        assert spent.settlement is not None
        await spent.settlement.settle(PRICED, Usage(1, 1))  # 2, past the soft limit of 1
        await admit(admission, key)  # warns (once per key and period)


async def test_budget_warnings_are_remembered_for_this_period_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One marker per budget per period was kept forever: a slow leak in a long-lived process.
    monkeypatch.setattr("keel.limits.admission.MAX_WARNED", 10)
    clock = Clock(at("2026-12-01T12:00:00"))
    audits = Audits()
    admission = Admission(MemoryBackend(clock), lambda _: NO_PROJECT_LIMITS, audits, clock=clock)
    limits = Limits.model_validate({"budget": {"amount": 100, "soft": 1, "period": "day"}})
    keys = [Principal(key_id=f"k{n}", project_id="p", role="app", limits=limits)
            for n in range(25)]  # fmt: skip
    await warn_all(admission, keys)
    await warn_all(admission, keys)  # markers forgotten past the cap are not warned again
    assert sorted(audits.warnings) == sorted(f"k{n}:d2026-12-01" for n in range(25))
    assert len(admission._warned) <= 10

    clock.now = at("2026-12-02T12:00:00")
    await admit(admission, keys[0])
    assert not admission._warned  # the markers of the day that ended are gone
    await warn_all(admission, keys[:3])
    assert audits.warnings[-3:] == [f"k{n}:d2026-12-02" for n in range(3)]
