from __future__ import annotations

import pytest

from keel.routing.breaker import CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def tripped(clock: FakeClock, threshold: int = 3, cooldown: float = 10.0) -> CircuitBreaker:
    breaker = CircuitBreaker(failure_threshold=threshold, cooldown=cooldown, clock=clock)
    for _ in range(threshold):
        breaker.record_failure()
    assert breaker.state == "open"
    return breaker


def test_closed_breaker_lets_everything_through(clock: FakeClock) -> None:
    breaker = CircuitBreaker(clock=clock)
    assert breaker.state == "closed"
    assert all(breaker.allow() for _ in range(100))


def test_opens_after_threshold_consecutive_failures(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=3, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed"
    assert breaker.consecutive_failures == 2
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    assert not breaker.allow()


def test_a_success_resets_the_count_of_consecutive_failures(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=3, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    assert breaker.consecutive_failures == 0
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed"


def test_open_breaker_refuses_until_the_cooldown_passes(clock: FakeClock) -> None:
    breaker = tripped(clock, cooldown=10.0)
    clock.advance(9.99)
    assert not breaker.allow()
    assert breaker.state == "open"
    clock.advance(0.01)
    assert breaker.state == "half_open"


def test_half_open_lets_exactly_one_probe_through(clock: FakeClock) -> None:
    breaker = tripped(clock)
    clock.advance(10)
    assert breaker.allow()
    assert [breaker.allow() for _ in range(5)] == [False] * 5
    assert breaker.state == "half_open"


def test_successful_probe_closes_the_breaker(clock: FakeClock) -> None:
    breaker = tripped(clock)
    clock.advance(10)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"
    assert breaker.consecutive_failures == 0
    assert all(breaker.allow() for _ in range(10))


def test_failed_probe_reopens_and_restarts_the_cooldown(clock: FakeClock) -> None:
    breaker = tripped(clock, cooldown=10.0)
    clock.advance(15)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    clock.advance(9)
    assert not breaker.allow()
    clock.advance(1)
    assert breaker.allow()


def test_a_probe_that_never_reports_does_not_fence_the_target_off_forever(
    clock: FakeClock,
) -> None:
    breaker = tripped(clock, cooldown=10.0)
    clock.advance(10)
    assert breaker.allow()  # this caller is cancelled and never records an outcome
    clock.advance(9)
    assert not breaker.allow()
    clock.advance(1)
    assert breaker.allow()
    assert not breaker.allow()


def test_late_failures_while_open_do_not_extend_the_cooldown(clock: FakeClock) -> None:
    breaker = tripped(clock, cooldown=10.0)
    clock.advance(5)
    breaker.record_failure()  # a request sent before the breaker opened
    clock.advance(5)
    assert breaker.allow()


@pytest.mark.parametrize(("threshold", "cooldown"), [(0, 1.0), (1, -1.0)])
def test_nonsense_settings_are_refused(threshold: int, cooldown: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        CircuitBreaker(failure_threshold=threshold, cooldown=cooldown)
