"""Unit tests for the retry policy: what is retried, and how long it waits."""

from __future__ import annotations

import itertools
import random

import pytest

from core.errors import (
    BlockhashExpired,
    DexecError,
    ErrorClass,
    IllegalTransition,
    InsufficientFunds,
    InvalidInput,
    NoRoute,
    OutcomeUnknownError,
    RateLimited,
    RetryableError,
    SlippageExceeded,
    TerminalError,
    TransactionUnconfirmed,
    TransientDatabaseError,
    VenueTimeout,
    VenueUnavailable,
)
from core.retry import RetryPolicy

RETRYABLE = [VenueTimeout("t"), RateLimited("r"), VenueUnavailable("u"), NoRoute("n"),
             BlockhashExpired("b"), TransientDatabaseError("d"), RetryableError("x")]
NOT_RETRYABLE = [SlippageExceeded("s"), InsufficientFunds("f"), InvalidInput("i"),
                 IllegalTransition("l"), TerminalError("t"), TransactionUnconfirmed("u"),
                 OutcomeUnknownError("o"), DexecError("e")]


@pytest.mark.parametrize("error", RETRYABLE, ids=lambda e: type(e).__name__)
def test_retryable_errors_are_retried_below_the_attempt_cap(error: DexecError) -> None:
    policy = RetryPolicy(max_attempts=3)
    assert error.retryable
    assert policy.should_retry(error, 1)
    assert policy.should_retry(error, 2)
    assert not policy.should_retry(error, 3)
    assert not policy.should_retry(error, 4)


@pytest.mark.parametrize("error", NOT_RETRYABLE, ids=lambda e: type(e).__name__)
def test_terminal_and_outcome_unknown_errors_are_never_retried(error: DexecError) -> None:
    policy = RetryPolicy(max_attempts=10)
    assert not error.retryable
    assert not policy.should_retry(error, 1)


def test_outcome_unknown_is_its_own_class() -> None:
    assert TransactionUnconfirmed("x").error_class is ErrorClass.OUTCOME_UNKNOWN
    assert SlippageExceeded("x").error_class is ErrorClass.TERMINAL
    assert BlockhashExpired("x").error_class is ErrorClass.RETRYABLE


def test_delay_without_jitter_doubles_until_the_cap() -> None:
    policy = RetryPolicy(base_delay_s=0.2, max_delay_s=1.0, jitter=0.0)
    rng = random.Random(1)
    assert [policy.delay(n, rng) for n in range(1, 6)] == pytest.approx(
        [0.2, 0.4, 0.8, 1.0, 1.0]
    )


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5])
def test_delay_stays_within_the_jitter_band(attempt: int) -> None:
    policy = RetryPolicy(base_delay_s=0.2, max_delay_s=100.0, jitter=0.5)
    rng = random.Random(42)
    raw = 0.2 * 2 ** (attempt - 1)
    delays = [policy.delay(attempt, rng) for _ in range(500)]
    assert all(raw * 0.5 <= d <= raw * 1.5 for d in delays)
    # It is jitter, not a constant: the band is actually used on both sides of the raw delay.
    assert min(delays) < raw * 0.7
    assert max(delays) > raw * 1.3


def test_delay_grows_exponentially_on_average() -> None:
    policy = RetryPolicy(base_delay_s=0.1, max_delay_s=100.0, jitter=0.5)
    rng = random.Random(7)
    means = [sum(policy.delay(n, rng) for _ in range(400)) / 400 for n in (1, 2, 3, 4)]
    for earlier, later in itertools.pairwise(means):
        assert later / earlier == pytest.approx(2.0, rel=0.15)


def test_delay_is_reproducible_with_a_seeded_rng() -> None:
    policy = RetryPolicy()
    first = [policy.delay(n, random.Random(3)) for n in range(1, 5)]
    second = [policy.delay(n, random.Random(3)) for n in range(1, 5)]
    assert first == second


def test_delay_never_exceeds_max_delay() -> None:
    policy = RetryPolicy(base_delay_s=0.2, max_delay_s=5.0, jitter=0.5)
    rng = random.Random(0)
    delays = [policy.delay(attempt, rng) for attempt in range(1, 20) for _ in range(50)]
    assert all(d >= 0.0 for d in delays)
    assert max(delays) <= policy.max_delay_s
