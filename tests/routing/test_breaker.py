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


def test_health_says_state_last_error_and_failures_in_the_last_minute(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=3, cooldown=10.0, clock=clock, name="chat@2")
    breaker.record_failure("502: connection refused")
    breaker.record_failure("502: connection refused")
    health = breaker.health()
    assert health["state"] == "closed"
    assert health["healthy"] is True
    assert health["failures_per_minute"] == 2
    assert health["last_error"] == "502: connection refused"
    breaker.record_failure("504: timed out")
    assert breaker.health()["healthy"] is False
    assert breaker.health()["last_error"] == "504: timed out"
    clock.advance(61)
    assert breaker.failures_per_minute() == 0  # older than a minute: no longer counted


def test_opening_and_closing_each_log_one_warning(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    breaker = CircuitBreaker(failure_threshold=2, cooldown=5.0, clock=clock, name="chat@2")
    with caplog.at_level("WARNING", logger="keel.routing"):
        for _ in range(4):  # two open it; late failures while open change nothing
            breaker.record_failure("502: connection refused")
        clock.advance(5)
        assert breaker.allow()  # the probe
        breaker.record_failure("502: still refused")  # re-opens: the outage goes on, quietly
        clock.advance(5)
        assert breaker.allow()
        breaker.record_success()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("circuit breaker of chat@2 opened after 2 consecutive failures")
    assert "502: connection refused" in lines[0]
    assert lines[1].startswith("circuit breaker of chat@2 closed")
