"""Unit tests for routing choices, slippage math and execution prices."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.quotes import Quote, choose_best, execution_price, min_amount_out
from tests.kit.orders import SOL, USDC


def quote(venue: str, amount_out: int, network_fee: int = 5000) -> Quote:
    return Quote(
        venue=venue, pool=f"{venue}-pool", input_mint=SOL, output_mint=USDC,
        amount_in=1_000_000_000, amount_out=amount_out, fee=2_500_000, fee_bps=Decimal(25),
        price_impact_bps=1, network_fee_lamports=network_fee,
    )


def best_venue(quotes: list[Quote]) -> str:
    """Return the venue choose_best picks; fail the test when it picks none."""
    best = choose_best(quotes)
    assert best is not None
    return best.venue


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
    assert best_venue([quote("aaa", 150_000_000, network_fee=10_000),
                       quote("zzz", 150_000_000, network_fee=5_000)]) == "zzz"


def test_choose_best_breaks_full_ties_by_venue_name() -> None:
    quotes = [quote("raydium", 150_000_000), quote("meteora", 150_000_000)]
    for ordering in (quotes, list(reversed(quotes))):
        assert best_venue(ordering) == "meteora"


def test_more_output_beats_a_cheaper_network_fee() -> None:
    assert best_venue([quote("cheap", 150_000_000, network_fee=0),
                       quote("better", 150_000_001, network_fee=1_000_000)]) == "better"


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
