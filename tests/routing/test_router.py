"""Target choice, attempt order and failover, with scripted providers (no network)."""

from __future__ import annotations

import collections
import random
from typing import Any

import pytest

from keel.auth.keys import Principal
from keel.errors import (
    InvalidRequest,
    NotFound,
    ServiceUnavailable,
    UpstreamAuthError,
    UpstreamError,
)
from keel.providers.base import ProviderResponse
from keel.routing.router import Router, attempt_order, choose
from keel.routing.table import Route, RoutingTable, Target

PRINCIPAL = Principal(key_id="k1", project_id="default", role="app")


class Scripted:
    """A provider whose answers are a script: an exception to raise, or 'ok'."""

    def __init__(self, name: str, script: list[Any] | None = None):
        self.name = name
        self.script = script or []
        self.calls = 0

    async def send(self, op: str, payload: dict[str, Any]) -> ProviderResponse:
        self.calls += 1
        step = self.script.pop(0) if self.script else "ok"
        if isinstance(step, Exception):
            raise step
        return ProviderResponse({"choices": [], "served_by": self.name}, None)


def target(ref: str, provider: Scripted | None = None) -> Target:
    return Target(ref, provider or Scripted(ref), "upstream")  # type: ignore[arg-type]


async def call_send(t: Target) -> ProviderResponse:
    return await t.provider.send("chat/completions", {})


def test_weights_decide_the_primary_target() -> None:
    route = Route("r", ((target("a@1"), 75), (target("b@1"), 25)))
    rng = random.Random(7)
    picks = collections.Counter(choose(route, PRINCIPAL, None, rng).ref for _ in range(4000))
    assert abs(picks["a@1"] / 4000 - 0.75) < 0.03


def test_zero_weight_targets_get_no_primary_traffic() -> None:
    route = Route("r", ((target("a@1"), 100), (target("b@1"), 0)))
    rng = random.Random(1)
    assert {choose(route, PRINCIPAL, None, rng).ref for _ in range(500)} == {"a@1"}


def test_sticky_by_user_and_by_key() -> None:
    route = Route("r", ((target("a@1"), 50), (target("b@1"), 50)), sticky="user")
    rng = random.Random()
    for user in ("u1", "u2", "u3"):
        assert len({choose(route, PRINCIPAL, user, rng).ref for _ in range(50)}) == 1
    by_key = Route("r", route.weighted, sticky="key")
    assert len({choose(by_key, PRINCIPAL, None, rng).ref for _ in range(50)}) == 1


def test_attempt_order_is_primary_then_others_by_weight_then_fallbacks() -> None:
    a, b, c, f = target("a@1"), target("b@1"), target("c@1"), target("f@1")
    route = Route("r", ((a, 10), (b, 60), (c, 30)), fallbacks=(f, b))
    assert [t.ref for t in attempt_order(route, a)] == ["a@1", "b@1", "c@1", "f@1"]
    assert [t.ref for t in attempt_order(route, c)] == ["c@1", "b@1", "a@1", "f@1"]


async def test_a_failing_target_hands_over_to_the_next() -> None:
    dead = Scripted("a", [ServiceUnavailable("down")] * 10)
    route = Route("r", ((target("a@1", dead), 100),), fallbacks=(target("b@1"),))
    outcome = await Router(rng=random.Random(0)).run(route, PRINCIPAL, None, call_send)
    assert outcome.target.ref == "b@1"
    assert outcome.attempts == 2
    assert outcome.headers()["X-Keel-Attempts"] == "2"


async def test_bad_requests_are_not_retried() -> None:
    picky = Scripted("a", [InvalidRequest("context too long")])
    backup = Scripted("b")
    route = Route("r", ((target("a@1", picky), 100),), fallbacks=(target("b@1", backup),))
    with pytest.raises(InvalidRequest):
        await Router().run(route, PRINCIPAL, None, call_send)
    assert backup.calls == 0


async def test_refused_credentials_are_never_retried_on_the_same_target() -> None:
    refusing = Scripted("a", [UpstreamAuthError("upstream 'a' answered 401: bad key")] * 9)
    route = Route("r", ((target("a@1", refusing), 100),), retries=2)
    router = Router(rng=random.Random(0))
    with pytest.raises(UpstreamAuthError) as info:
        await router.run(route, PRINCIPAL, None, call_send)
    assert refusing.calls == 1  # neither retried nor waited for: the same key fails alike
    assert info.value.message.startswith("target 'a@1': upstream 'a' answered 401")
    assert (info.value.status, info.value.type) == (502, "upstream_auth_error")
    assert router.breaker_states()["a@1"] == "closed"  # the upstream is up; the key is wrong


async def test_refused_credentials_fall_over_to_another_provider_not_the_same_one() -> None:
    refusing = Scripted("a", [UpstreamAuthError("answered 403")] * 9)
    other = Scripted("b")
    # a@2 is served by the same provider client as a@1, so it holds the same key.
    route = Route(
        "r",
        ((target("a@1", refusing), 100),),
        fallbacks=(target("a@2", refusing), target("b@1", other)),
    )
    outcome = await Router(rng=random.Random(0)).run(route, PRINCIPAL, None, call_send)
    assert outcome.target.ref == "b@1"
    assert (refusing.calls, other.calls, outcome.attempts) == (1, 1, 2)


async def test_breaker_opens_and_keeps_traffic_off_a_dead_target() -> None:
    dead = Scripted("a", [UpstreamError("boom")] * 100)
    router = Router(failure_threshold=3, cooldown=60, rng=random.Random(0))
    route = Route("r", ((target("a@1", dead), 100),), fallbacks=(target("b@1"),), retries=0)
    for _ in range(10):
        outcome = await router.run(route, PRINCIPAL, None, call_send)
        assert outcome.target.ref == "b@1"
    assert dead.calls == 3  # after three failures the breaker stopped sending to it
    assert router.breaker_states()["a@1"] == "open"


async def test_when_everything_fails_the_last_error_is_raised() -> None:
    route = Route(
        "r", ((target("a@1", Scripted("a", [UpstreamError("a broke")] * 9)), 1),), retries=1
    )
    with pytest.raises(UpstreamError, match="a broke"):
        await Router(rng=random.Random(0)).run(route, PRINCIPAL, None, call_send)


def test_unknown_model_lists_what_is_known() -> None:
    router = Router()
    router.table = RoutingTable(static={"fake": target("fake")})
    with pytest.raises(NotFound, match=r"known: fake"):
        router.resolve("default", "gpt-5")
    assert router.resolve("default", "fake").weighted[0][0].ref == "fake"


async def test_target_health_counts_failed_attempts_a_retry_saved() -> None:
    dead = Scripted("a", [ServiceUnavailable("connection refused")] * 10)
    route = Route("r", ((target("a@1", dead), 100),), fallbacks=(target("b@1"),), retries=0)
    router = Router(rng=random.Random(0))
    outcome = await router.run(route, PRINCIPAL, None, call_send)
    assert outcome.target.ref == "b@1"  # the client never saw the failure
    health = router.target_health()
    assert health["a@1"]["failures_per_minute"] == 1
    assert health["a@1"]["last_error"] == "503: connection refused"
    assert health["b@1"]["failures_per_minute"] == 0


async def test_a_route_with_its_own_breaker_settings_has_its_own_breakers() -> None:
    shared = Scripted("a", [ServiceUnavailable("down")] * 10)
    a = target("a@1", shared)
    strict = Route("strict", ((a, 1),), retries=0, breaker_failures=1, breaker_cooldown=60)
    lenient = Route("lenient", ((a, 1),), retries=0)
    router = Router(failure_threshold=5, rng=random.Random(0))
    with pytest.raises(ServiceUnavailable):
        await router.run(strict, PRINCIPAL, None, call_send)
    health = router.target_health()
    assert health["a@1 route=strict"]["state"] == "open"  # one failure opens it
    assert "a@1" not in health  # the gateway-wide breaker of a@1 never saw that failure
    with pytest.raises(ServiceUnavailable):
        await router.run(lenient, PRINCIPAL, None, call_send)
    assert router.target_health()["a@1"]["state"] == "closed"  # 1 of 5
    assert router.breaker_states()["a@1"] == "open"  # the worst of a@1's breakers
