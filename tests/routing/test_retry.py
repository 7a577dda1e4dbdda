from __future__ import annotations

import random

import pytest

from keel.errors import (
    AuthenticationFailed,
    InvalidRequest,
    KeelError,
    NotFound,
    PermissionDenied,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)
from keel.routing.retry import RetryPolicy


def policy(
    seed: int = 7, *, base_delay: float = 0.1, max_delay: float = 2.0, retry_after_cap: float = 30.0
) -> RetryPolicy:
    return RetryPolicy(
        base_delay=base_delay,
        max_delay=max_delay,
        rng=random.Random(seed),
        retry_after_cap=retry_after_cap,
    )


def test_delays_stay_within_the_exponential_ceiling() -> None:
    retry = policy(base_delay=0.1, max_delay=2.0)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.6), (6, 2.0)]:
        for _ in range(200):
            wait = retry.delay(attempt)
            assert wait is not None
            assert 0.0 <= wait <= ceiling


def test_delays_grow_with_the_attempt_on_average() -> None:
    retry = policy(base_delay=0.1, max_delay=10.0)
    means = []
    for attempt in (1, 2, 3, 4):
        waits = [retry.delay(attempt) or 0.0 for _ in range(2000)]
        means.append(sum(waits) / len(waits))
    assert means == sorted(means)
    assert means[3] > 5 * means[0]


def test_delays_never_exceed_max_delay_even_after_many_attempts() -> None:
    retry = policy(max_delay=2.0)
    assert all(0 <= (retry.delay(attempt) or 0) <= 2.0 for attempt in (10, 100, 10_000))


def test_same_seed_gives_the_same_delays() -> None:
    first, second = policy(seed=3), policy(seed=3)
    assert [first.delay(n) for n in range(1, 6)] == [second.delay(n) for n in range(1, 6)]


def test_retry_after_is_honoured_exactly() -> None:
    retry = policy(max_delay=2.0)
    assert retry.delay(1, retry_after=5.0) == 5.0
    assert retry.delay(3, retry_after=0.0) == 0.0


def test_retry_after_beyond_the_cap_says_do_not_wait() -> None:
    retry = policy(retry_after_cap=30.0)
    assert retry.delay(1, retry_after=30.0) == 30.0
    assert retry.delay(1, retry_after=31.0) is None


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        policy().delay(0)


@pytest.mark.parametrize(
    "error",
    [
        ServiceUnavailable("upstream 'x' answered 429"),
        UpstreamError("upstream 'x' answered 500"),
        UpstreamTimeout("upstream 'x' did not answer in time"),
    ],
)
def test_transient_upstream_failures_are_retryable(error: KeelError) -> None:
    assert policy().retryable(error)


@pytest.mark.parametrize(
    "error",
    [
        InvalidRequest("bad temperature", param="temperature"),
        NotFound("unknown model 'x'"),
        AuthenticationFailed("invalid key"),
        PermissionDenied("not allowed"),
        KeelError("a bug"),
    ],
)
def test_client_mistakes_are_not_retried(error: KeelError) -> None:
    assert not policy().retryable(error)


def test_nonsense_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
