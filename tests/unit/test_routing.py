"""Unit tests for routing choices, slippage math, the retry policy and picklable errors."""

from __future__ import annotations

import itertools
import pickle
import random
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import errors
from core.errors import (
    BlockhashExpired,
    DexecError,
    ErrorClass,
    IllegalTransition,
    InsufficientFunds,
    InvalidInput,
    NoRoute,
    OutcomeUnknownError,
    Overloaded,
    RateLimited,
    RetryableError,
    SlippageExceeded,
    TerminalError,
    TransactionUnconfirmed,
    TransientDatabaseError,
    VenueTimeout,
    VenueUnavailable,
)
from core.quotes import Quote, choose_best, execution_price, min_amount_out
from core.retry import RetryPolicy

SOL = "So11111111111111111111111111111111111111112"
USDC = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"


def quote(venue: str, amount_out: int, network_fee: int = 5000) -> Quote:
    return Quote(
        venue=venue, pool=f"{venue}-pool", input_mint=SOL, output_mint=USDC,
        amount_in=1_000_000_000, amount_out=amount_out, fee=2_500_000, fee_bps=Decimal(25),
        price_impact_bps=1, network_fee_lamports=network_fee,
    )


# --- choose_best ---------------------------------------------------------------------------


def test_choose_best_picks_the_most_output() -> None:
    quotes = [quote("raydium", 149_000_000), quote("meteora", 150_100_000),
              quote("orca", 150_000_000)]
    best = choose_best(quotes)
    assert best is not None
    assert best.venue == "meteora"
    # The order the venues answered in does not matter.
    assert choose_best(reversed(quotes)) == best


def test_choose_best_breaks_ties_by_lower_network_fee() -> None:
    quotes = [quote("aaa", 150_000_000, network_fee=10_000),
              quote("zzz", 150_000_000, network_fee=5_000)]
    best = choose_best(quotes)
    assert best is not None
    assert best.venue == "zzz"


def test_choose_best_breaks_full_ties_by_venue_name() -> None:
    quotes = [quote("raydium", 150_000_000), quote("meteora", 150_000_000)]
    for ordering in (quotes, list(reversed(quotes))):
        best = choose_best(ordering)
        assert best is not None
        assert best.venue == "meteora"


def test_more_output_beats_a_cheaper_network_fee() -> None:
    quotes = [quote("cheap", 150_000_000, network_fee=0),
              quote("better", 150_000_001, network_fee=1_000_000)]
    best = choose_best(quotes)
    assert best is not None
    assert best.venue == "better"


def test_choose_best_of_nothing_is_none() -> None:
    assert choose_best([]) is None
    assert choose_best(iter(())) is None


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]),
                          st.integers(min_value=0, max_value=10**12),
                          st.integers(min_value=0, max_value=10**6)), min_size=1, max_size=8))
def test_choose_best_never_leaves_more_output_on_the_table(
    offers: list[tuple[str, int, int]],
) -> None:
    quotes = [quote(v, out, fee) for v, out, fee in offers]
    best = choose_best(quotes)
    assert best is not None
    assert best in quotes
    assert best.amount_out == max(q.amount_out for q in quotes)


# --- slippage and price --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quoted", "bps", "expected"),
    [
        (1_000_000, 50, 995_000),
        (1_000_000, 0, 1_000_000),
        (1_000_000, 10_000, 0),
        (1_000_000, 1, 999_900),
        (999, 50, 994),  # 994.005 floors
        (1, 50, 0),  # 0.995 floors
        (10**30, 25, 9975 * 10**26),
    ],
)
def test_min_amount_out(quoted: int, bps: int, expected: int) -> None:
    assert min_amount_out(quoted, bps) == expected


@given(quoted=st.integers(min_value=0, max_value=10**30),
       bps=st.integers(min_value=0, max_value=10_000))
def test_min_amount_out_is_the_floor_and_never_above_the_quote(quoted: int, bps: int) -> None:
    floor = min_amount_out(quoted, bps)
    assert isinstance(floor, int)
    assert 0 <= floor <= quoted
    # floor <= quoted * (1 - bps/1e4) < floor + 1, in exact integer arithmetic.
    assert floor * 10_000 <= quoted * (10_000 - bps) < (floor + 1) * 10_000


def test_execution_price_is_output_ui_units_per_input_ui_unit() -> None:
    # 1.5 SOL (9 decimals) for 225.3 USDC (6 decimals): 150.2 USDC per SOL.
    price = execution_price(1_500_000_000, 9, 225_300_000, 6)
    assert isinstance(price, Decimal)
    assert price == Decimal("150.2")
    # The other way round: 1 USDC buys 0.006666666666... SOL, kept to 12 places.
    assert execution_price(1_000_000, 6, 6_666_666, 9) == Decimal("0.006666666")
    assert execution_price(3_000_000, 6, 1_000_000_000, 9) == Decimal("0.333333333333")


# --- retry policy --------------------------------------------------------------------------

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


# --- errors cross process boundaries -------------------------------------------------------

ALL_ERRORS = sorted(
    (obj for obj in vars(errors).values()
     if isinstance(obj, type) and issubclass(obj, DexecError)),
    key=lambda cls: cls.__name__,
)


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.__name__)
def test_errors_survive_pickle_with_class_message_and_venue(cls: type[DexecError]) -> None:
    error = cls("raydium answered 503", venue="raydium")
    restored = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
    assert type(restored) is cls
    assert restored.message == "raydium answered 503"
    assert str(restored) == "raydium answered 503"
    assert restored.venue == "raydium"
    assert restored.code == cls.code
    assert restored.error_class is cls.error_class
    assert restored.retryable == error.retryable


def test_error_without_venue_pickles_as_none() -> None:
    restored = pickle.loads(pickle.dumps(SlippageExceeded("too far")))  # noqa: S301
    assert isinstance(restored, SlippageExceeded)
    assert restored.venue is None


def test_extra_fields_survive_pickle_too() -> None:
    error = Overloaded("too many open orders", retry_after_s=7.0)
    restored = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
    assert type(restored) is Overloaded
    assert restored.retry_after_s == 7.0
    assert restored.message == "too many open orders"


def test_error_codes_are_unique() -> None:
    codes = [cls.code for cls in ALL_ERRORS]
    assert len(codes) == len(set(codes))
